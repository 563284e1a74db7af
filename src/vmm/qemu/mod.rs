//! QEMU `microvm` backend controlled over QMP.
