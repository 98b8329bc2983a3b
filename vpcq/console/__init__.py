"""The web console and `vpcq graph`: pictures of the log, live and as it was at any seq.

    scene     the console's fold of the log (the folded State, where each object sits, what is
              being deleted, what pending commands change, failures and drift repairs); pure
    model     topology(scene, facts) -> nodes and edges, and what changed between two pictures
    layout    where each node and edge is drawn, and how it looks; pure
    export    the same picture as SVG, DOT and Mermaid text; pure
    timeline  the audit log as commands with their outcomes; pure
    archive   reads the log (EventStore only, never a write) and the observed facts
    web       the Starlette app served by uvicorn for `vpcq ui`

Only `web` imports Starlette and uvicorn, and only `vpcq ui` imports `web`.
"""
