// A frontend's use of the generated types: a token read, and its error body when it fails.
import type { components, paths } from "./schema";

type TokenRead = paths["/token-management/tokens/{branch_id}"]["get"];
type Token = TokenRead["responses"][200]["content"]["application/json"];
type NotFound = TokenRead["responses"][404]["content"]["application/json"];
type Invalid = TokenRead["responses"][422]["content"]["application/json"];
type ErrorBody = components["schemas"]["ErrorResponse"];

export function describeInvalid(body: Invalid): string {
  const fields: string[] = body.fields.map((entry) => `${entry.field}: ${entry.message}`);
  return `${body.error}: ${fields.join("; ")}`;
}

export function describeError(body: ErrorBody | NotFound): string {
  return `${body.error}: ${body.detail}`;
}

export function bearerOf(token: Token): string {
  return `${token.token_type} ${token.access_token}`;
}

export const missing: NotFound = { error: "connection_not_found", detail: "no such connection" };

export type ConnectionStatus = components["schemas"]["ConnectionOut"]["status"];
