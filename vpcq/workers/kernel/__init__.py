"""The kernel drivers: the only code that touches netlink, namespaces, sysctls, rules and
app processes. `kernel.Kernel` dispatches to one driver per kind of object."""
