// Package web serves mailsync's server-rendered pages under "/": signing
// in with an API token, the SMTP accounts (admin), the connected mailboxes
// with their outgoing block, the CRM senders, the send log, and users and
// tokens (admin). The pages call the same services as the JSON API,
// through the interfaces package api declares; they hold no logic of their
// own beyond turning forms into service calls and results into HTML.
//
// Invariants:
//   - Templates and static files are embedded (go:embed) and parsed once,
//     in New; a page is rendered into a buffer first, so a template error
//     becomes a 500 page, never half a page. Every string a page shows comes
//     from the i18n catalogue under "web." (the check explanations and hints
//     come localised from the services), in English or Russian: the
//     language cookie set by the switch, else Accept-Language.
//   - Nothing is loaded from another origin: every response carries
//     Content-Security-Policy "default-src 'self'; frame-ancestors 'none'"
//     (with base-uri, form-action and object-src narrowed too), so neither
//     inline script nor inline style runs; X-Content-Type-Options nosniff;
//     Referrer-Policy same-origin; Cache-Control no-store on pages.
//   - A session is an opaque random id (256 bits) in an HttpOnly,
//     SameSite=Strict cookie, Secure when the request came over TLS (or
//     always, with Options.SecureCookies, behind a TLS-terminating proxy).
//     The id maps to the session in memory: sessions do not survive a
//     restart, and instances do not share them (sign in again). A session
//     keeps the API token it was opened with and authenticates it again on
//     every request, so revoking the token or deleting the user ends the
//     session at once. Sessions end after Options.SessionIdle without a
//     request and after Options.SessionMaxAge in any case.
//   - Every change is a POST, and every POST carries a CSRF token: the
//     session's own random token (synchronizer pattern), or before sign-in
//     an HMAC of a random pre-session cookie under a per-process key
//     (signed double submit). net/http's CrossOriginProtection refuses
//     cross-origin POSTs by Sec-Fetch-Site and Origin as a second wall.
//   - No password or token is ever rendered back into a form. A new API
//     token is shown exactly once, in the response that issued it.
//   - Core forms work without JavaScript; static/app.js only enhances: the
//     Check buttons fetch the report without reloading the page, a provider
//     preset fills its fields in, and delete buttons ask for confirmation.
//
// The package imports api (for the service interfaces), outgoing, mailbox,
// internal/users, internal/i18n and internal/apperr; api does not import it.
// cmd/mailsync builds it with New and hands it to api.Deps.Web.
package web
