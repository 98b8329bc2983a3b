"""The model of iptables-save text: where vpcq's jump rules go in the host's FORWARD and
POSTROUTING chains, a teardown, and the rules after vpcq's own restore (pure)."""

from __future__ import annotations

import itertools

from vpcq.workers.kernel.ruleset import Ruleset, jump_inserts


def chain_rules(text: str, table: str, chain: str) -> list[str]:
    return Ruleset.parse(text).chain(table, chain)


def chain_teardown(text: str, chains: list[str]) -> str:
    return Ruleset.parse(text).teardown(chains)


def after_restore(text: str, doc: str) -> str | None:
    after = Ruleset.parse(text).after(doc)
    if after is None:
        return None
    # the parse a change keeps for the next one (HostChains) is the parse of the text kept
    assert Ruleset.parse(after.render()) == after
    return after.render()


def insert_all(rules: list[str], new: list[str]) -> list[str]:
    out = list(rules)
    for pos, rule in jump_inserts(out, new):
        out.insert(pos - 1, rule)
    return out


def jumps(chain: str) -> list[str]:
    return [f"-i vq{chain}u -j VPCQ-{chain}", f"-o vq{chain}u -j VPCQ-{chain}"]


def test_the_order_of_the_jumps_does_not_depend_on_the_order_they_were_added():
    finals = set()
    for order in itertools.permutations(["aaaaaa", "bbbbbb", "cccccc"]):
        rules: list[str] = []
        for chain in order:
            rules = insert_all(rules, jumps(chain))
        finals.add(tuple(rules))
    assert finals == {tuple(jumps("aaaaaa") + jumps("bbbbbb") + jumps("cccccc"))}


def test_other_programs_rules_keep_their_places():
    foreign = ["-i eth9 -j ACCEPT", "-j DOCKER-USER"]
    rules = insert_all(foreign, jumps("bbbbbb"))
    assert rules == jumps("bbbbbb") + foreign
    rules = insert_all(rules, jumps("cccccc"))
    rules = insert_all(rules, jumps("aaaaaa"))
    assert rules == jumps("aaaaaa") + jumps("bbbbbb") + jumps("cccccc") + foreign
    # a foreign rule inserted at the top later stays above the block
    rules = insert_all(["-j FIRST", *rules], jumps("abcdef"))
    assert rules[:4] == ["-j FIRST", *jumps("aaaaaa"), jumps("abcdef")[0]]


def test_jumps_already_there_are_not_inserted_again():
    rules = jumps("aaaaaa")
    assert jump_inserts(rules, jumps("aaaaaa")) == []


def test_chain_rules_reads_one_chain_of_one_table():
    text = ("*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j X\n-A INPUT -j Y\nCOMMIT\n"
            "*nat\n-A FORWARD -j Z\nCOMMIT\n")
    assert chain_rules(text, "filter", "FORWARD") == ["-j X"]
    assert chain_rules(text, "nat", "FORWARD") == ["-j Z"]


def test_teardown_removes_the_chain_and_every_jump_to_it_in_every_table():
    text = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:VPCQ-aaaaaa - [0:0]\n"
            ":VPCQ-bbbbbb - [0:0]\n-A FORWARD -i vqaaaaaau -j VPCQ-aaaaaa\n"
            "-A FORWARD -i vqbbbbbbu -j VPCQ-bbbbbb\n-A VPCQ-aaaaaa -j DROP\nCOMMIT\n"
            "*nat\n:POSTROUTING ACCEPT [0:0]\n:VPCQ-aaaaaa - [0:0]\n-A POSTROUTING -j VPCQ-aaaaaa\n"
            "-A VPCQ-aaaaaa -o inet0 -j MASQUERADE\nCOMMIT\n")
    assert chain_teardown(text, ["VPCQ-aaaaaa"]) == (
        "*filter\n-D FORWARD -i vqaaaaaau -j VPCQ-aaaaaa\n-F VPCQ-aaaaaa\n-X VPCQ-aaaaaa\nCOMMIT\n"
        "*nat\n-D POSTROUTING -j VPCQ-aaaaaa\n-F VPCQ-aaaaaa\n-X VPCQ-aaaaaa\nCOMMIT\n")
    assert chain_teardown(text, ["VPCQ-cccccc"]) == ""  # already gone: nothing to do
    assert chain_teardown(text, ["VPCQ-bbbbbb", "VPCQ-aaaaaa", "VPCQ-cccccc"]) == (  # one restore
        "*filter\n-D FORWARD -i vqaaaaaau -j VPCQ-aaaaaa\n-D FORWARD -i vqbbbbbbu -j VPCQ-bbbbbb\n"
        "-F VPCQ-aaaaaa\n-F VPCQ-bbbbbb\n-X VPCQ-aaaaaa\n-X VPCQ-bbbbbb\nCOMMIT\n"
        "*nat\n-D POSTROUTING -j VPCQ-aaaaaa\n-F VPCQ-aaaaaa\n-X VPCQ-aaaaaa\nCOMMIT\n")


# ---- the host's rules after vpcq's own restore, without reading them again -----------------

HOST = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER-USER - [0:0]
:VPCQ-aaaaaa - [0:0]
-A FORWARD -i vqaaaaaau -j VPCQ-aaaaaa
-A FORWARD -j DOCKER-USER
-A VPCQ-aaaaaa -i vqaaaaaau -j DROP
COMMIT
"""


def test_a_chain_made_and_jumped_to_is_in_the_text_after_it():
    doc = ("*filter\n:VPCQ-bbbbbb - [0:0]\n-A VPCQ-bbbbbb -i vqbbbbbbu -j DROP\n"
           "-I FORWARD 2 -i vqbbbbbbu -j VPCQ-bbbbbb\nCOMMIT\n"
           "*nat\n:VPCQ-bbbbbb - [0:0]\n-A VPCQ-bbbbbb -o eth0 -j MASQUERADE\n"
           "-I POSTROUTING 1 -j VPCQ-bbbbbb\nCOMMIT\n")
    after = after_restore(HOST, doc)
    assert after is not None
    assert chain_rules(after, "filter", "FORWARD") == [
        "-i vqaaaaaau -j VPCQ-aaaaaa", "-i vqbbbbbbu -j VPCQ-bbbbbb", "-j DOCKER-USER"]
    assert chain_rules(after, "filter", "VPCQ-bbbbbb") == ["-i vqbbbbbbu -j DROP"]
    # a table the restore brings into being, with the base chain it used
    assert chain_rules(after, "nat", "POSTROUTING") == ["-j VPCQ-bbbbbb"]
    assert ":FORWARD DROP [0:0]" in after.splitlines()  # policies are kept


def test_declaring_a_chain_again_flushes_it():
    after = after_restore(HOST, "*filter\n:VPCQ-aaaaaa - [0:0]\n-A VPCQ-aaaaaa -j ACCEPT\nCOMMIT\n")
    assert after is not None and chain_rules(after, "filter", "VPCQ-aaaaaa") == ["-j ACCEPT"]


def test_a_teardown_leaves_the_text_without_the_chain():
    after = after_restore(HOST, chain_teardown(HOST, ["VPCQ-aaaaaa"]))
    assert after is not None
    assert "VPCQ-aaaaaa" not in after
    assert chain_rules(after, "filter", "FORWARD") == ["-j DOCKER-USER"]


def test_a_line_iptables_would_refuse_or_that_is_not_followed_gives_no_text():
    for doc in (
        "*filter\n-I FORWARD 4 -j X\nCOMMIT\n",  # past the end of the chain
        "*filter\n-D FORWARD -j NOTHERE\nCOMMIT\n",  # no such rule
        "*filter\n-X VPCQ-aaaaaa\nCOMMIT\n",  # still has rules and a jump to it
        "*filter\n-A NOSUCH -j ACCEPT\nCOMMIT\n",  # no such chain
        "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n",  # a policy: not followed
        "*filter\n-P FORWARD ACCEPT\nCOMMIT\n",
    ):
        assert after_restore(HOST, doc) is None, doc


def test_the_shared_host_rules_file_is_used_only_in_the_boot_it_was_written(tmp_path, monkeypatch):
    """After a reboot the host namespace's cookie and its nftables generation count from the
    start again: a file kept from the last boot may carry the same key."""
    from vpcq.workers.kernel import hostrules

    shared = tmp_path / "host-rules"
    key = (1, 12)
    hostrules.HostRules(shared)._keep(key, "*filter\nCOMMIT\n")
    assert hostrules.HostRules(shared)._load(key) == "*filter\nCOMMIT\n"
    assert hostrules.HostRules(shared)._load((1, 13)) is None
    monkeypatch.setattr(hostrules, "BOOT_ID", "another-boot")
    assert hostrules.HostRules(shared)._load(key) is None
    shared.write_text(f"{key[0]} {key[1]}\n*filter\nCOMMIT\n")  # an older vpcq's file
    assert hostrules.HostRules(shared)._load(key) is None


def test_parse_and_render_keep_the_tables_chains_and_rules():
    rs = Ruleset.parse(HOST)
    assert Ruleset.parse(rs.render()) == rs
    assert rs.chain("filter", "FORWARD") == chain_rules(HOST, "filter", "FORWARD")


def test_an_emptied_table_vpcq_made_is_told_from_one_that_holds_rules():
    made = "*nat\n:PREROUTING ACCEPT [0:0]\n:VPCQ-OWNED - [0:0]\nCOMMIT\n"
    assert Ruleset.parse(made).emptied("VPCQ-OWNED") == ["nat"]
    used = made.replace("COMMIT", "-A PREROUTING -j DNAT --to-destination 10.0.0.1\nCOMMIT")
    assert Ruleset.parse(used).emptied("VPCQ-OWNED") == []
    assert Ruleset.parse(made.replace(":VPCQ-OWNED - [0:0]\n", "")).emptied("VPCQ-OWNED") == []


def test_a_setup_declares_the_chains_and_puts_their_jumps_in_the_block_then_a_teardown_undoes_it():
    host = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A FORWARD -i vqaaaaaau -j VPCQ-aaaaaa\n-A FORWARD -j DOCKER-USER\nCOMMIT\n")
    rs = Ruleset.parse(host)
    doc = rs.setup({"VPCQ-bbbbbb": {"filter": ["-s 10.0.0.0/16 -j ACCEPT"],
                                    "nat": ["-s 10.0.0.0/16 -j MASQUERADE"]}},
                   [("filter", "FORWARD", "-i vqbbbbbbu -j VPCQ-bbbbbb"),
                    ("nat", "POSTROUTING", "-j VPCQ-bbbbbb")], "VPCQ-OWNED")
    assert doc == ("*filter\n:VPCQ-bbbbbb - [0:0]\n-A VPCQ-bbbbbb -s 10.0.0.0/16 -j ACCEPT\n"
                   "-I FORWARD 2 -i vqbbbbbbu -j VPCQ-bbbbbb\nCOMMIT\n"
                   # no nat table on the host yet: the one made now is tagged as vpcq's
                   "*nat\n:VPCQ-OWNED - [0:0]\n:VPCQ-bbbbbb - [0:0]\n"
                   "-A VPCQ-bbbbbb -s 10.0.0.0/16 -j MASQUERADE\n"
                   "-I POSTROUTING 1 -j VPCQ-bbbbbb\nCOMMIT\n")
    after = rs.after(doc)
    assert after is not None and after.chain("filter", "FORWARD") == [
        "-i vqaaaaaau -j VPCQ-aaaaaa", "-i vqbbbbbbu -j VPCQ-bbbbbb", "-j DOCKER-USER"]
    assert after.emptied("VPCQ-OWNED") == []
    gone = after.after(after.teardown(["VPCQ-bbbbbb"]))
    assert gone is not None and gone.emptied("VPCQ-OWNED") == ["nat"]
    assert gone.chain("filter", "FORWARD") == rs.chain("filter", "FORWARD")


def test_jumps_to_finds_the_rules_of_other_chains_that_jump_to_each_chain():
    rs = Ruleset.parse(
        "*filter\n:FORWARD ACCEPT [0:0]\n:VPCQ-A - [0:0]\n:VPCQ-B - [0:0]\n"
        "-A FORWARD -i vqa -j VPCQ-A\n-A FORWARD -o vqa -j VPCQ-A\n-A FORWARD -j DROP\n"
        "-A VPCQ-A -j VPCQ-B\n-A VPCQ-B -j ACCEPT\nCOMMIT\n"
        "*nat\n:POSTROUTING ACCEPT [0:0]\n:VPCQ-A - [0:0]\n-A POSTROUTING -s 10.0.0.0/16 -j VPCQ-A\nCOMMIT\n")
    assert rs.jumps_to(["VPCQ-A", "VPCQ-C"]) == {
        "VPCQ-A": {"filter:FORWARD -i vqa -j VPCQ-A", "filter:FORWARD -o vqa -j VPCQ-A",
                   "nat:POSTROUTING -s 10.0.0.0/16 -j VPCQ-A"},
        "VPCQ-C": set(),
    }
    # asked again, with the chain that jumps among the ones asked: its jump is not counted
    assert rs.jumps_to(["VPCQ-B"]) == {"VPCQ-B": {"filter:VPCQ-A -j VPCQ-B"}}
    assert rs.jumps_to(["VPCQ-A", "VPCQ-B"])["VPCQ-B"] == set()
