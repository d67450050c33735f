// Package api is mailsync's HTTP face: the JSON API under /api/v1, health
// and readiness probes, and Prometheus metrics.
//
// Invariants:
//   - Every route is declared once, in the route table (routes.go), with the
//     access it needs; the table is what the mux serves, what the metrics are
//     labelled by, and what the authorization tests enumerate.
//   - Every /api/v1 route but none requires "Authorization: Bearer <token>";
//     a missing or unknown token is 401, a non-admin on an admin route 403.
//   - Every error leaves as {"error":{"code","message","field"}} with a
//     stable code; internal error text goes to the log, never to the client.
//   - Request bodies are size-limited and decoded strictly: unknown fields
//     and trailing data are refused.
//   - Handlers are thin: decode, validate, call a service, respond. The
//     services are reached through small interfaces declared here.
package api
