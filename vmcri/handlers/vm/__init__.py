"""The ``vm`` backend: each pod sandbox in its own QEMU/KVM virtual machine."""
