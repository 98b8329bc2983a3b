"""The kernel adapter: the only code that touches netlink, namespaces, sysctls and rules."""
