/**
 * TypeScript SDK for Hatch, the microVM control plane (Node.js 20 or newer;
 * no runtime dependencies: the global fetch).
 *
 * ```ts
 * import { Client } from "hatchvm";
 * const hatch = new Client(); // HATCH_URL, HATCH_API_KEY
 * const vm = await hatch.createVm({ user_data: "#!/bin/sh\necho hi > /dev/console\n" }, { waitReady: true });
 * ```
 */

export * from "./client.js";
export * from "./errors.js";
export { ExecSession, outputBytes, type OutputStream } from "./guest.js";
export type * from "./types.js";
export { Parser as SseParser, type Message as SseMessage } from "./sse.js";
