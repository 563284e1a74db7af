/**
 * Exceptions for the API's error JSON `{"error": {"code", "message", "field"}}`.
 * Each stable `code` maps to one class, so callers can write
 * `if (err instanceof NotFound)`; a code this SDK does not know yet still
 * throws {@link ApiError} with the code kept.
 */

/** Base of every error this SDK throws. */
export class HatchError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The daemon answered with an error status. */
export class ApiError extends HatchError {
  constructor(
    /** The HTTP status. */
    readonly status: number,
    /** The API's stable error code (e.g. `invalid_field`). */
    readonly code: string,
    /** What the daemon said. */
    readonly detail: string,
    /** The request field at fault, when the API names one. */
    readonly field: string | null = null,
  ) {
    super(`${status} ${code}: ${detail}${field ? ` (field: ${field})` : ""}`);
  }
}

/** 400: a field is invalid (`invalid_field`) or the body is not JSON (`invalid_json`). */
export class ValidationError extends ApiError {}
/** 401: the key is missing, unknown or revoked. */
export class Unauthorized extends ApiError {}
/** 403 `forbidden`: the endpoint needs an admin key. */
export class Forbidden extends ApiError {}
/** 403 `quota_exceeded`: `field` names the quota (`max_vms`, ...). */
export class QuotaExceeded extends Forbidden {}
/** 404: no such object, or one that belongs to another key. */
export class NotFound extends ApiError {}
/** 405. */
export class MethodNotAllowed extends ApiError {}
/** 409 `conflict`: `field` is already taken (an IP, MAC or name). */
export class Conflict extends ApiError {}
/** 409 `invalid_state`: the VM's state refuses the request. */
export class InvalidState extends ApiError {}
/** 409 `agent_unavailable`: the VM's guest agent is not connected (an image without hatch-agent, or a guest that has not started it). */
export class AgentUnavailable extends ApiError {}
/** 413. */
export class TooLarge extends ApiError {}
/** 415. */
export class UnsupportedMediaType extends ApiError {}
/** 422: a snapshot artefact failed its checksum. */
export class SnapshotCorrupt extends ApiError {}
/** 500. */
export class Internal extends ApiError {}
/** 503: the host cannot do it now (no free address, hypervisor missing, ...). */
export class Unavailable extends ApiError {}
/** 507: not enough memory or disk on the host for the request. */
export class InsufficientCapacity extends ApiError {}
/** 504: the daemon's own wait (e.g. `wait=ready`) ran out. */
export class Timeout extends ApiError {}

/** 429: `retryAfter` is the number of seconds the daemon asked to wait. */
export class RateLimited extends ApiError {
  constructor(status: number, code: string, detail: string, field: string | null, readonly retryAfter: number | null) {
    super(status, code, detail, field);
  }
}

/** A waiting helper gave up; `last` is the VM as last seen. */
export class WaitTimeout extends HatchError {
  constructor(message: string, readonly last: unknown) {
    super(message);
  }
}

/** A waited-for VM ended in a state that will not lead to the one wanted. */
export class UnexpectedState extends HatchError {
  constructor(message: string, readonly vm: unknown) {
    super(message);
  }
}

type ApiErrorClass = new (status: number, code: string, detail: string, field: string | null) => ApiError;

export const ERRORS_BY_CODE: Readonly<Record<string, ApiErrorClass>> = {
  invalid_field: ValidationError,
  invalid_json: ValidationError,
  unauthorized: Unauthorized,
  forbidden: Forbidden,
  quota_exceeded: QuotaExceeded,
  rate_limited: RateLimited as unknown as ApiErrorClass,
  not_found: NotFound,
  method_not_allowed: MethodNotAllowed,
  conflict: Conflict,
  invalid_state: InvalidState,
  agent_unavailable: AgentUnavailable,
  too_large: TooLarge,
  unsupported_media_type: UnsupportedMediaType,
  unavailable: Unavailable,
  insufficient_capacity: InsufficientCapacity,
  timeout: Timeout,
  snapshot_corrupt: SnapshotCorrupt,
  internal: Internal,
};

/** The exception for an error answer; a body that is not the error JSON keeps its text. */
export function errorFromResponse(status: number, body: string, retryAfter: string | null = null): ApiError {
  let code = "";
  let detail = "";
  let field: string | null = null;
  try {
    const error = (JSON.parse(body) as { error: { code: unknown; message: unknown; field?: unknown } }).error;
    if (typeof error.code !== "string" || typeof error.message !== "string") throw new Error("not the error JSON");
    code = error.code;
    detail = error.message;
    field = typeof error.field === "string" ? error.field : null;
  } catch {
    detail = body.trim() || `HTTP ${status}`;
  }
  if (code === "rate_limited") {
    const seconds = retryAfter === null ? NaN : Number(retryAfter);
    return new RateLimited(status, code, detail, field, Number.isFinite(seconds) ? seconds : null);
  }
  const Class = Object.hasOwn(ERRORS_BY_CODE, code) ? ERRORS_BY_CODE[code]! : ApiError;
  return new Class(status, code || `http_${status}`, detail, field);
}
