/**
 * Commands in a VM's guest over the WebSocket form of exec
 * (`GET /vms/{id}/exec`); see {@link Client.execStream}.
 */

import { HatchError, errorFromResponse } from "./errors.js";
import type { ExecExit, ExecResult } from "./types.js";
import { BINARY, TEXT, WebSocketConnection } from "./websocket.js";

/** Which stream an output chunk came from (the daemon's first byte: 1 stdout, 2 stderr). */
export type OutputStream = "stdout" | "stderr";

const STATUS_OF_CODE: Record<string, number> = {
  invalid_field: 400,
  invalid_json: 400,
  forbidden: 403,
  not_found: 404,
  agent_unavailable: 409,
  invalid_state: 409,
};

/** `stdout` or `stderr` of an exec result as bytes, whichever way it was sent. */
export function outputBytes(result: ExecResult, name: OutputStream = "stdout"): Buffer {
  const text = result[name];
  if (typeof text === "string") return Buffer.from(text, "utf8");
  const encoded = result[`${name}_base64`];
  return typeof encoded === "string" ? Buffer.from(encoded, "base64") : Buffer.alloc(0);
}

/**
 * A command running over the WebSocket form of exec. Iterate it
 * (`for await`) for `[stream, bytes]` until it ends; then {@link exit}
 * holds how. Closing the session kills the command.
 */
export class ExecSession implements AsyncIterable<[OutputStream, Buffer]> {
  exit: ExecExit | undefined;

  constructor(private readonly socket: WebSocketConnection) {}

  /** Sends bytes (or text) to the command's standard input. */
  write(data: Uint8Array | string): void {
    this.socket.send(BINARY, typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data));
  }

  closeStdin(): void {
    this.control({ type: "eof" });
  }

  resize(rows: number, cols: number): void {
    this.control({ type: "resize", rows, cols });
  }

  kill(): void {
    this.control({ type: "kill" });
  }

  close(): void {
    this.socket.close();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<[OutputStream, Buffer]> {
    while (this.exit === undefined) {
      const message = await this.socket.next();
      if (message.type === "binary" && message.data.length > 0) {
        yield [message.data[0] === 2 ? "stderr" : "stdout", message.data.subarray(1)];
      } else if (message.type === "text") {
        const parsed = JSON.parse(message.data) as { type: string; code?: string };
        if (parsed.type === "exit") {
          this.exit = parsed as ExecExit;
          return;
        }
        throw errorFromResponse(STATUS_OF_CODE[parsed.code ?? ""] ?? 500, JSON.stringify({ error: parsed }));
      } else if (message.type === "close") {
        throw new HatchError("the daemon closed the exec stream before the command ended");
      }
    }
  }

  /** Reads everything to the end: stdout, stderr and the exit. */
  async wait(): Promise<{ stdout: Buffer; stderr: Buffer; exit: ExecExit }> {
    const out: Record<OutputStream, Buffer[]> = { stdout: [], stderr: [] };
    for await (const [stream, data] of this) out[stream].push(data);
    return { stdout: Buffer.concat(out.stdout), stderr: Buffer.concat(out.stderr), exit: this.exit! };
  }

  private control(message: Record<string, unknown>): void {
    this.socket.send(TEXT, Buffer.from(JSON.stringify(message), "utf8"));
  }
}
