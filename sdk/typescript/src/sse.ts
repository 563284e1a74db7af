/**
 * Server-Sent Events as `GET /events` sends them (the WHATWG rules:
 * `field: value` lines, a blank line ends a message, `:` starts a comment).
 */

export interface Message {
  event: string;
  data: string;
  id: string | null;
}

/** Fed one line at a time; returns a message when a blank line ends one. Comments (keep-alives) give nothing. */
export class Parser {
  private event = "";
  private data: string[] = [];
  lastId: string | null = null;

  feed(raw: string): Message | null {
    const line = raw.replace(/\r?\n$/, "").replace(/\r$/, "");
    if (line === "") {
      const message = this.data.length > 0 ? { event: this.event || "message", data: this.data.join("\n"), id: this.lastId } : null;
      this.event = "";
      this.data = [];
      return message;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") this.event = value;
    else if (name === "data") this.data.push(value);
    else if (name === "id") this.lastId = value;
    return null;
  }
}

/** The lines of a byte stream (UTF-8), each without its line end. */
export async function* lines(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const chunk of body) {
    buffered += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
    }
  }
  buffered += decoder.decode();
  if (buffered) yield buffered;
}

/** The messages of a stream of lines; a message cut off before its blank line is dropped. */
export async function* parse(source: AsyncIterable<string>): AsyncGenerator<Message> {
  const parser = new Parser();
  for await (const line of source) {
    const message = parser.feed(line);
    if (message) yield message;
  }
}
