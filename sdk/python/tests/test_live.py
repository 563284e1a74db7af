"""Against a real daemon and a real guest. Run by the Rust integration test
``sdk_clients`` (inside the Hatch host's network namespace), which sets:
HATCH_URL, HATCH_API_KEY, HATCH_TEST_IMAGE (an image id), HATCH_TEST_SSH_PUBLIC_KEY,
HATCH_TEST_SSH_PRIVATE_KEY (a file) and HATCH_TEST_UNIX_URL (the daemon's socket)."""

import os
import subprocess
import time
import unittest

import hatchvm
import hatchvm.types

LIVE = bool(os.environ.get("HATCH_TEST_IMAGE"))
SKIP_REASON = "needs a daemon: run by `cargo test --test integration sdk_clients`"


def ssh(private_key: str, address: str, command: str) -> str:
    """``command`` in the guest over SSH, retried while sshd settles (after a restore)."""
    args = ["ssh", "-i", private_key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
            f"root@{address}", command]
    deadline = time.monotonic() + 60
    while True:
        result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"ssh {address} {command!r} failed: {result.stderr}")
        time.sleep(1)


@unittest.skipUnless(LIVE, SKIP_REASON)
class ContractTest(unittest.TestCase):
    def setUp(self):
        self.hatch = hatchvm.Client()

    def test_every_operation_of_the_daemons_openapi_has_a_method(self):
        spec = self.hatch.openapi()
        documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
        covered = set(hatchvm.covered_operations())
        self.assertEqual(documented - covered, set(), "operations without an SDK method")
        self.assertEqual(covered - documented, set(), "SDK methods for operations the daemon does not have")
        codes = set(spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
        self.assertEqual(codes, set(hatchvm.errors.ERRORS_BY_CODE), "error codes without an exception class")

    def test_every_schema_of_the_daemons_openapi_has_a_typed_dict_with_its_fields(self):
        renamed = {"Error": "ErrorBody"}
        for name, schema in self.hatch.openapi()["components"]["schemas"].items():
            with self.subTest(schema=name):
                typed = getattr(hatchvm.types, renamed.get(name, name))
                self.assertEqual(typed.__required_keys__, set(schema.get("required", [])))
                self.assertEqual(typed.__optional_keys__, set(schema["properties"]) - set(schema.get("required", [])))

    def test_bad_input_raises_the_mapped_exception_naming_the_field(self):
        before = len(self.hatch.list_vms())
        with self.assertRaises(hatchvm.ValidationError) as caught:
            self.hatch.create_vm(image_id=os.environ["HATCH_TEST_IMAGE"], vcpu_count=0)
        self.assertEqual((caught.exception.status, caught.exception.field), (400, "vcpu_count"))
        self.assertEqual(len(self.hatch.list_vms()), before, "a refused create left a VM behind")
        with self.assertRaises(hatchvm.NotFound):
            self.hatch.get_vm("vm-doesnotexist")
        with self.assertRaises(hatchvm.Unauthorized):
            hatchvm.Client(api_key="hatch_wrong").list_vms()

    def test_the_unix_socket_serves_the_same_api(self):
        health = hatchvm.Client(os.environ["HATCH_TEST_UNIX_URL"]).health()
        self.assertEqual(health["version"], self.hatch.health()["version"])


@unittest.skipUnless(LIVE, SKIP_REASON)
class GuestTest(unittest.TestCase):
    def test_create_with_user_data_wait_snapshot_restore_delete(self):
        hatch = hatchvm.Client()
        marker = f"sdk-python-{os.getpid()}"
        user_data = f"#!/bin/sh\necho {marker} > /root/marker\necho {marker} > /dev/console\n"
        vm = hatch.create_vm(image_id=os.environ["HATCH_TEST_IMAGE"], user_data=user_data,
                             ssh_authorized_keys=[os.environ["HATCH_TEST_SSH_PUBLIC_KEY"]],
                             asynchronous=True)
        self.assertEqual(vm["state"], "creating")
        vm = hatch.wait_ready(vm["id"], timeout=240)
        self.assertEqual(vm["state"], "running")
        self.assertTrue(vm["ready_at"])
        kinds = [event["kind"] for event in hatch.events(vm=vm["id"], since=0, follow=False)]
        self.assertIn("ready", kinds)

        # The user data ran: its line is on the console and its file in the guest.
        deadline = time.monotonic() + 60
        while marker not in hatch.logs(vm["id"]):
            self.assertLess(time.monotonic(), deadline, "the user data's line never reached the console")
            time.sleep(0.5)
        key = os.environ["HATCH_TEST_SSH_PRIVATE_KEY"]
        self.assertEqual(ssh(key, vm["guest_ip"], "cat /root/marker").strip(), marker)
        ssh(key, vm["guest_ip"], "echo in-memory > /root/after-boot")
        self._agent_calls(hatch, vm["id"])

        snapshot = hatch.snapshot_vm(vm["id"])
        self.assertEqual(snapshot["vm_id"], vm["id"])
        self.assertEqual(hatch.get_vm(vm["id"])["state"], "snapshotted")
        self.assertIn(snapshot["id"], [s["id"] for s in hatch.list_snapshots(vm["id"])])
        # The snapshot the VM would restore from cannot go.
        with self.assertRaises(hatchvm.InvalidState):
            hatch.delete_snapshot(snapshot["id"])

        restoring = hatch.restore_vm(vm["id"], asynchronous=True)
        self.assertIn(restoring["state"], ("restoring", "running"))
        restored = hatch.wait_state(vm["id"], "running", timeout=240)
        self.assertEqual(restored["guest_ip"], vm["guest_ip"])
        self.assertEqual(ssh(key, vm["guest_ip"], "cat /root/marker /root/after-boot").split(),
                         [marker, "in-memory"])

        # A wait that cannot end in time says so, with the VM as last seen.
        with self.assertRaises(hatchvm.WaitTimeout) as caught:
            hatch.wait_state(vm["id"], "stopped", timeout=1)
        self.assertEqual(caught.exception.last["state"], "running")

        deleting = hatch.delete_vm(vm["id"], asynchronous=True)
        self.assertEqual(deleting["state"], "deleting")
        # Waiting for a VM that is being deleted to be ready ends when it is gone.
        with self.assertRaises(hatchvm.UnexpectedState):
            hatch.wait_ready(vm["id"], timeout=120)
        hatch.wait_deleted(vm["id"], timeout=120)
        with self.assertRaises(hatchvm.NotFound):
            hatch.get_vm(vm["id"])

    def _agent_calls(self, hatch, vm_id):
        """Exec and files through the guest agent (the minimal image has it:
        its hello made the VM ready)."""
        self.assertTrue(hatch.get_vm(vm_id)["agent"]["connected"])
        result = hatch.exec(vm_id, ["sh", "-c", "cat; echo err >&2; exit 3"], stdin="in\n")
        self.assertEqual((result["exit_code"], hatchvm.output_bytes(result), hatchvm.output_bytes(result, "stderr")),
                         (3, b"in\n", b"err\n"))
        with hatch.exec_stream(vm_id, ["cat"]) as session:
            session.write(b"\x00\xffbinary")
            session.close_stdin()
            out, _, exit = session.wait()
        self.assertEqual((out, exit["exit_code"]), (b"\x00\xffbinary", 0))
        data = os.urandom(300_000)
        self.assertEqual(hatch.upload_file(vm_id, "/tmp/sdk.bin", data, mode=0o600)["bytes"], len(data))
        self.assertEqual(hatch.download_file(vm_id, "/tmp/sdk.bin"), data)
        entry = next(e for e in hatch.list_files(vm_id, "/tmp")["entries"] if e["name"] == "sdk.bin")
        self.assertEqual((entry["type"], entry["size"], entry["mode"] & 0o777), ("file", len(data), 0o600))
        hatch.delete_file(vm_id, "/tmp/sdk.bin")
        with self.assertRaises(hatchvm.NotFound):
            hatch.download_file(vm_id, "/tmp/sdk.bin")


@unittest.skipUnless(LIVE, SKIP_REASON)
class ForkTest(unittest.TestCase):
    """``fork`` and ``create_vm(snapshot_id=...)``: new VMs with the parent's
    memory and files and identities of their own."""

    def setUp(self):
        self.hatch = hatchvm.Client()
        self.key = os.environ["HATCH_TEST_SSH_PRIVATE_KEY"]
        self.made = []
        self.addCleanup(self._delete_made)
        self.parent = self._keep(self.hatch.create_vm(
            image_id=os.environ["HATCH_TEST_IMAGE"], ssh_authorized_keys=[os.environ["HATCH_TEST_SSH_PUBLIC_KEY"]],
            wait_ready=True, ready_timeout=240))
        self._run(self.parent["id"], "echo from-parent > /tmp/marker")

    def _keep(self, vm):
        self.made.append(vm["id"])
        return vm

    def _delete_made(self):
        for vm_id in self.made:
            try:
                self.hatch.delete_vm(vm_id)
            except hatchvm.NotFound:
                pass

    def _run(self, vm_id, script):
        result = self.hatch.exec(vm_id, ["sh", "-c", script])
        self.assertEqual(result["exit_code"], 0, result)
        return hatchvm.output_bytes(result).decode()

    def _assert_distinct(self, vms):
        for field in ("id", "guest_ip", "guest_mac", "tap_name", "ssh_port"):
            self.assertEqual(len({vm[field] for vm in vms}), len(vms), f"{field} shared: {vms}")

    def _assert_own_guest(self, vm):
        """Running, named after itself, the parent's file, reachable at its own address."""
        self.assertEqual(vm["state"], "running")
        self.assertEqual(self._run(vm["id"], "hostname").strip(), vm["id"])
        self.assertEqual(ssh(self.key, vm["guest_ip"], "cat /tmp/marker; hostname").split(),
                         ["from-parent", vm["id"]])

    def test_fork_gives_each_child_the_parents_files_and_its_own_identity(self):
        before = {vm["id"] for vm in self.hatch.list_vms()}
        for count in (0, 17):
            with self.assertRaises(hatchvm.ValidationError) as caught:
                self.hatch.fork(self.parent["id"], count)
            self.assertEqual((caught.exception.status, caught.exception.field), (400, "count"))
        self.assertEqual({vm["id"] for vm in self.hatch.list_vms()}, before, "a refused fork left a VM behind")

        children = [self._keep(vm) for vm in self.hatch.fork(self.parent["id"], 2)]
        self.assertEqual(len(children), 2)
        self._assert_distinct([self.parent] + children)
        for child in children:
            self._assert_own_guest(child)
        # A write in one child is its own.
        self._run(children[0]["id"], "echo mine > /tmp/only-here")
        self.assertEqual(self._run(children[1]["id"], "test -e /tmp/only-here && echo seen || echo absent"), "absent\n")
        self.assertEqual(self._run(self.parent["id"], "test -e /tmp/only-here && echo seen || echo absent"), "absent\n")
        self.assertEqual(self.hatch.get_vm(self.parent["id"])["state"], "running")

    def test_create_from_a_snapshot_gives_a_new_vm_with_the_snapshots_guest(self):
        snapshot = self.hatch.snapshot_vm(self.parent["id"])
        with self.assertRaises(hatchvm.ValidationError) as caught:
            self.hatch.create_vm(snapshot_id=snapshot["id"], mem_mib=256)
        self.assertEqual(caught.exception.field, "mem_mib")
        clone = self._keep(self.hatch.create_vm(snapshot_id=snapshot["id"], ttl_seconds=3600))
        self.assertEqual(clone.get("ttl_seconds"), 3600)
        self.assertEqual(self.hatch.get_vm(self.parent["id"])["state"], "snapshotted")
        self._assert_distinct([self.parent, clone])
        self._assert_own_guest(clone)


if __name__ == "__main__":
    unittest.main()
