/**
 * A small WebSocket client (RFC 6455) over node:http(s), for the streaming
 * form of exec: Node 20 has no global WebSocket, and the SDK takes no
 * runtime dependencies.
 */

import { createHash, randomBytes } from "node:crypto";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Duplex } from "node:stream";

import { HatchError, errorFromResponse } from "./errors.js";

export const TEXT = 0x1;
export const BINARY = 0x2;
const CLOSE = 0x8;
const PING = 0x9;
const PONG = 0xa;

/** A whole message from the server: text, binary, or the close. */
export type WsMessage = { type: "text"; data: string } | { type: "binary"; data: Buffer } | { type: "close" };

/** One upgraded connection; messages are queued until read with {@link next}. */
export class WebSocketConnection {
  private buffer = Buffer.alloc(0);
  private readonly queue: WsMessage[] = [];
  private waiting: ((message: WsMessage) => void) | undefined;
  private fragments: Buffer[] = [];
  private fragmentOpcode = 0;

  constructor(private readonly socket: Duplex, head: Buffer) {
    socket.on("data", (chunk: Buffer) => this.receive(chunk));
    socket.on("close", () => this.deliver({ type: "close" }));
    socket.on("error", () => this.deliver({ type: "close" }));
    if (head.length) this.receive(head);
  }

  /** Opens `url` (http:// or https://) as a WebSocket with `headers`; an error answer throws the mapped exception. */
  static open(url: string, headers: Record<string, string>): Promise<WebSocketConnection> {
    const key = randomBytes(16).toString("base64");
    const request = (url.startsWith("https:") ? httpsRequest : httpRequest)(url, {
      headers: { ...headers, Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13" },
    });
    return new Promise((resolve, reject) => {
      request.on("upgrade", (response: IncomingMessage, socket: Duplex, head: Buffer) => {
        const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
        if (response.headers["sec-websocket-accept"] !== accept) {
          socket.destroy();
          reject(new HatchError("the daemon answered the WebSocket upgrade with a wrong Sec-WebSocket-Accept"));
          return;
        }
        resolve(new WebSocketConnection(socket, head));
      });
      request.on("response", (response: IncomingMessage) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          const retryAfter = response.headers["retry-after"];
          reject(errorFromResponse(response.statusCode ?? 0, Buffer.concat(chunks).toString("utf8"), typeof retryAfter === "string" ? retryAfter : null));
        });
      });
      request.on("error", (err) => reject(new HatchError(`GET ${url}: ${err.message}`, { cause: err })));
      request.end();
    });
  }

  /** Sends one frame, masked as a client's must be. */
  send(opcode: number, payload: Buffer): void {
    const mask = randomBytes(4);
    const n = payload.length;
    const header = n < 126 ? Buffer.from([0x80 | opcode, 0x80 | n]) : Buffer.alloc(n < 65536 ? 4 : 10);
    if (n >= 126) {
      header[0] = 0x80 | opcode;
      if (n < 65536) {
        header[1] = 0x80 | 126;
        header.writeUInt16BE(n, 2);
      } else {
        header[1] = 0x80 | 127;
        header.writeBigUInt64BE(BigInt(n), 2);
      }
    }
    const masked = Buffer.alloc(n);
    for (let i = 0; i < n; i++) masked[i] = payload[i]! ^ mask[i % 4]!;
    this.socket.write(Buffer.concat([header, mask, masked]));
  }

  /** The next message (a close once the connection has ended). */
  next(): Promise<WsMessage> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  close(): void {
    try {
      this.send(CLOSE, Buffer.from([0x03, 0xe8]));
    } catch {
      // already gone
    }
    this.socket.end();
  }

  private deliver(message: WsMessage): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting) waiting(message);
    else this.queue.push(message);
  }

  private receive(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const first = this.buffer[0]!;
      const second = this.buffer[1]!;
      let length = second & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      const masked = (second & 0x80) !== 0;
      const start = offset + (masked ? 4 : 0);
      if (this.buffer.length < start + length) return;
      const payload = Buffer.from(this.buffer.subarray(start, start + length));
      if (masked) for (let i = 0; i < length; i++) payload[i]! ^= this.buffer[offset + (i % 4)]!;
      this.buffer = this.buffer.subarray(start + length);
      this.frame(first & 0x80 ? true : false, first & 0x0f, payload);
    }
  }

  private frame(fin: boolean, opcode: number, payload: Buffer): void {
    if (opcode === PING) return this.send(PONG, payload);
    if (opcode === PONG) return;
    if (opcode === CLOSE) return this.deliver({ type: "close" });
    if (opcode !== 0) this.fragmentOpcode = opcode;
    this.fragments.push(payload);
    if (!fin) return;
    const data = Buffer.concat(this.fragments);
    this.fragments = [];
    this.deliver(this.fragmentOpcode === TEXT ? { type: "text", data: data.toString("utf8") } : { type: "binary", data });
  }
}
