// Against a real daemon and a real guest. Run by the Rust integration test
// `sdk_clients` (inside the Hatch host's network namespace), which sets:
// HATCH_URL, HATCH_API_KEY, HATCH_TEST_IMAGE (an image id),
// HATCH_TEST_SSH_PUBLIC_KEY and HATCH_TEST_SSH_PRIVATE_KEY (a file).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, test } from "node:test";

import * as hatch from "../src/index.js";
import { SHAPES } from "./shapes.js";

const env = process.env;
const skip = env.HATCH_TEST_IMAGE ? false : "needs a daemon: run by `cargo test --test integration sdk_clients`";

/** `command` in the guest over SSH, retried while sshd settles (after a restore). */
async function ssh(address: string, command: string): Promise<string> {
  const args = ["-i", env.HATCH_TEST_SSH_PRIVATE_KEY!, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", `root@${address}`, command];
  const deadline = Date.now() + 60_000;
  for (;;) {
    const result = spawnSync("ssh", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    if (result.status === 0) return result.stdout;
    if (Date.now() > deadline) throw new Error(`ssh ${address} ${command}: ${result.stderr}`);
    await sleep(1000);
  }
}

describe("the API contract", { skip }, () => {
  const client = new hatch.Client();

  test("every operation of the daemon's /openapi.json has a method, every error code a class", async () => {
    const spec = (await client.openapi()) as {
      paths: Record<string, Record<string, unknown>>;
      components: { schemas: { Error: { properties: { error: { properties: { code: { enum: string[] } } } } } } };
    };
    const documented = new Set(Object.entries(spec.paths).flatMap(([path, item]) => Object.keys(item).map((m) => `${m.toUpperCase()} ${path}`)));
    const covered = new Set(Object.values(hatch.OPERATIONS).map(([method, path]) => `${method} ${path}`));
    assert.deepEqual([...documented].filter((op) => !covered.has(op)), [], "operations without an SDK method");
    assert.deepEqual([...covered].filter((op) => !documented.has(op)), [], "SDK methods for operations the daemon does not have");
    const codes = spec.components.schemas.Error.properties.error.properties.code.enum;
    assert.deepEqual([...codes].sort(), Object.keys(hatch.ERRORS_BY_CODE).sort());
  });

  test("every schema of the daemon's /openapi.json has an interface with its fields", async () => {
    const spec = (await client.openapi()) as {
      components: { schemas: Record<string, { properties: Record<string, unknown>; required?: string[] }> };
    };
    for (const [name, schema] of Object.entries(spec.components.schemas)) {
      const required = new Set(schema.required ?? []);
      const documented = Object.fromEntries(Object.keys(schema.properties).map((key) => [key, required.has(key) ? "required" : "optional"]));
      assert.deepEqual(SHAPES[name], documented, `schema ${name}`);
    }
  });

  test("bad input throws the mapped exception naming the field, and leaves nothing", async () => {
    const before = (await client.listVms()).length;
    await assert.rejects(client.createVm({ image_id: env.HATCH_TEST_IMAGE, vcpu_count: 0 }), (err: unknown) => {
      assert.ok(err instanceof hatch.ValidationError);
      assert.deepEqual([err.status, err.field], [400, "vcpu_count"]);
      return true;
    });
    assert.equal((await client.listVms()).length, before);
    await assert.rejects(client.getVm("vm-doesnotexist"), hatch.NotFound);
    await assert.rejects(new hatch.Client({ apiKey: "hatch_wrong" }).listVms(), hatch.Unauthorized);
  });
});

/** Exec and files through the guest agent (the minimal image has it: its hello made the VM ready). */
async function agentCalls(client: hatch.Client, id: string): Promise<void> {
  assert.ok((await client.getVm(id)).agent.connected);
  const result = await client.exec(id, ["sh", "-c", "cat; echo err >&2; exit 3"], { stdin: "in\n" });
  assert.deepEqual([result.exit_code, hatch.outputBytes(result).toString(), hatch.outputBytes(result, "stderr").toString()], [3, "in\n", "err\n"]);
  const session = await client.execStream(id, ["cat"]);
  session.write(Buffer.from([0, 255, 98]));
  session.closeStdin();
  const { stdout, exit } = await session.wait();
  session.close();
  assert.deepEqual([[...stdout], exit.exit_code], [[0, 255, 98], 0]);
  const data = randomBytes(300_000);
  assert.equal((await client.uploadFile(id, "/tmp/sdk.bin", data, { mode: 0o600 })).bytes, data.length);
  assert.ok((await client.downloadFile(id, "/tmp/sdk.bin")).equals(data));
  const entry = (await client.listFiles(id, "/tmp")).entries.find((e) => e.name === "sdk.bin");
  assert.deepEqual([entry?.type, entry?.size, (entry?.mode ?? 0) & 0o777], ["file", data.length, 0o600]);
  await client.deleteFile(id, "/tmp/sdk.bin");
  await assert.rejects(client.downloadFile(id, "/tmp/sdk.bin"), hatch.NotFound);
}

describe("a real guest", { skip }, () => {
  test("create with user data, wait ready, snapshot, restore, delete", async () => {
    const client = new hatch.Client();
    const marker = `sdk-typescript-${process.pid}`;
    const userData = `#!/bin/sh\necho ${marker} > /root/marker\necho ${marker} > /dev/console\n`;
    let vm = await client.createVm(
      { image_id: env.HATCH_TEST_IMAGE, user_data: userData, ssh_authorized_keys: [env.HATCH_TEST_SSH_PUBLIC_KEY!] },
      { async: true },
    );
    assert.equal(vm.state, "creating");
    vm = await client.waitReady(vm.id, { timeoutMs: 240_000 });
    assert.equal(vm.state, "running");
    assert.ok(vm.ready_at);
    const kinds = [];
    for await (const event of client.events({ vm: vm.id, since: 0, follow: false })) kinds.push(event.kind);
    assert.ok(kinds.includes("ready"), `${kinds}`);

    // The user data ran: its line is on the console and its file in the guest.
    const deadline = Date.now() + 60_000;
    while (!(await client.logs(vm.id)).includes(marker)) {
      assert.ok(Date.now() < deadline, "the user data's line never reached the console");
      await sleep(500);
    }
    assert.equal((await ssh(vm.guest_ip!, "cat /root/marker")).trim(), marker);
    await ssh(vm.guest_ip!, "echo in-memory > /root/after-boot");
    await agentCalls(client, vm.id);

    const snapshot = await client.snapshotVm(vm.id);
    assert.equal(snapshot.vm_id, vm.id);
    assert.equal((await client.getVm(vm.id)).state, "snapshotted");
    assert.ok((await client.listSnapshots(vm.id)).some((s) => s.id === snapshot.id));
    // The snapshot the VM would restore from cannot go.
    await assert.rejects(client.deleteSnapshot(snapshot.id), hatch.InvalidState);

    const restoring = await client.restoreVm(vm.id, { async: true });
    assert.ok(["restoring", "running"].includes(restoring.state), restoring.state);
    const restored = await client.waitState(vm.id, "running", { timeoutMs: 240_000 });
    assert.equal(restored.guest_ip, vm.guest_ip);
    assert.deepEqual((await ssh(vm.guest_ip!, "cat /root/marker /root/after-boot")).split(/\s+/).filter(Boolean), [marker, "in-memory"]);

    // A wait that cannot end in time says so, with the VM as last seen.
    await assert.rejects(client.waitState(vm.id, "stopped", { timeoutMs: 1000 }), (err: unknown) => {
      assert.ok(err instanceof hatch.WaitTimeout, String(err));
      assert.equal((err.last as hatch.Vm).state, "running");
      return true;
    });

    const deleting = await client.deleteVm(vm.id, { async: true });
    assert.equal(deleting.state, "deleting");
    // Waiting for a VM that is being deleted to be ready ends when it is gone.
    await assert.rejects(client.waitReady(vm.id, { timeoutMs: 120_000 }), hatch.UnexpectedState);
    await client.waitDeleted(vm.id, { timeoutMs: 120_000 });
    await assert.rejects(client.getVm(vm.id), hatch.NotFound);
  });
});

describe("fork and create from a snapshot", { skip }, () => {
  const client = new hatch.Client();

  /** A ready VM with /tmp/marker written, and a list of VMs to delete when done. */
  async function parentVm(made: string[]): Promise<hatch.Vm> {
    const parent = await client.createVm(
      { image_id: env.HATCH_TEST_IMAGE, ssh_authorized_keys: [env.HATCH_TEST_SSH_PUBLIC_KEY!] },
      { waitReady: true, readyTimeoutSeconds: 240 },
    );
    made.push(parent.id);
    await run(parent.id, "echo from-parent > /tmp/marker");
    return parent;
  }

  async function deleteAll(made: string[]): Promise<void> {
    for (const id of made) await client.deleteVm(id).catch((err) => assert.ok(err instanceof hatch.NotFound, String(err)));
  }

  async function run(id: string, script: string): Promise<string> {
    const result = await client.exec(id, ["sh", "-c", script]);
    assert.equal(result.exit_code, 0, JSON.stringify(result));
    return hatch.outputBytes(result).toString();
  }

  function assertDistinct(vms: hatch.Vm[]): void {
    for (const field of ["id", "guest_ip", "guest_mac", "tap_name", "ssh_port"] as const) {
      assert.equal(new Set(vms.map((vm) => vm[field])).size, vms.length, `${field} shared: ${JSON.stringify(vms)}`);
    }
  }

  /** Running, named after itself, the parent's file, reachable at its own address. */
  async function assertOwnGuest(vm: hatch.Vm): Promise<void> {
    assert.equal(vm.state, "running");
    assert.equal((await run(vm.id, "hostname")).trim(), vm.id);
    assert.deepEqual((await ssh(vm.guest_ip!, "cat /tmp/marker; hostname")).split(/\s+/).filter(Boolean), ["from-parent", vm.id]);
  }

  test("fork gives each child the parent's files and its own identity", async () => {
    const made: string[] = [];
    try {
      const parent = await parentVm(made);
      const before = (await client.listVms()).length;
      for (const count of [0, 17]) {
        await assert.rejects(client.fork(parent.id, count), (err: unknown) => {
          assert.ok(err instanceof hatch.ValidationError, String(err));
          assert.deepEqual([err.status, err.field], [400, "count"]);
          return true;
        });
      }
      assert.equal((await client.listVms()).length, before, "a refused fork left a VM behind");

      const children = await client.fork(parent.id, 2);
      made.push(...children.map((vm) => vm.id));
      assert.equal(children.length, 2);
      assertDistinct([parent, ...children]);
      for (const child of children) await assertOwnGuest(child);
      await run(children[0].id, "echo mine > /tmp/only-here");
      for (const other of [children[1].id, parent.id]) {
        assert.equal(await run(other, "test -e /tmp/only-here && echo seen || echo absent"), "absent\n");
      }
      assert.equal((await client.getVm(parent.id)).state, "running");
    } finally {
      await deleteAll(made);
    }
  });

  test("create from a snapshot gives a new VM with the snapshot's guest", async () => {
    const made: string[] = [];
    try {
      const parent = await parentVm(made);
      const snapshot = await client.snapshotVm(parent.id);
      await assert.rejects(client.createVm({ snapshot_id: snapshot.id, mem_mib: 256 }), (err: unknown) => {
        assert.ok(err instanceof hatch.ValidationError, String(err));
        assert.equal(err.field, "mem_mib");
        return true;
      });
      const clone = await client.createVm({ snapshot_id: snapshot.id, ttl_seconds: 3600 });
      made.push(clone.id);
      assert.equal(clone.ttl_seconds, 3600);
      assert.equal((await client.getVm(parent.id)).state, "snapshotted");
      assertDistinct([parent, clone]);
      await assertOwnGuest(clone);
    } finally {
      await deleteAll(made);
    }
  });
});
