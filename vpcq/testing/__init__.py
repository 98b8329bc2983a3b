"""Tooling for the tests, the demo and the benchmarks: a throwaway host with a simulated
internet, and probes that make real connections from inside namespaces. Nothing vpcq runs
in production imports it (an import-linter contract checks that)."""
