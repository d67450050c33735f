package api

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/outgoing"
)

// authRow is what the authorization matrix expects of one route.
type authRow struct {
	access Access
	// object is the kind of the route's {id}: "" for none.
	object string
	// adminSees: an admin reaches another user's object (false: it answers
	// to the admin as missing, like to any other user).
	adminSees bool
}

// authMatrix has one row per route: a route added to the table without a
// row here fails TestAuthorizationMatrix.
var authMatrix = map[string]authRow{
	"GET /healthz":   {access: Public},
	"GET /readyz":    {access: Public},
	"GET /metrics":   {access: Public},
	"GET /api/v1/me": {access: User},

	"GET /api/v1/smtp-accounts":         {access: Admin},
	"POST /api/v1/smtp-accounts":        {access: Admin},
	"POST /api/v1/smtp-accounts/check":  {access: Admin},
	"GET /api/v1/smtp-accounts/{id}":    {access: Admin, object: "account", adminSees: true},
	"PATCH /api/v1/smtp-accounts/{id}":  {access: Admin, object: "account", adminSees: true},
	"DELETE /api/v1/smtp-accounts/{id}": {access: Admin, object: "account", adminSees: true},

	"GET /api/v1/providers":        {access: User},
	"GET /api/v1/providers/lookup": {access: User},

	"GET /api/v1/mailboxes":                            {access: User},
	"POST /api/v1/mailboxes":                           {access: User},
	"GET /api/v1/mailboxes/{id}":                       {access: User, object: "mailbox", adminSees: true},
	"PATCH /api/v1/mailboxes/{id}":                     {access: User, object: "mailbox", adminSees: true},
	"DELETE /api/v1/mailboxes/{id}":                    {access: User, object: "mailbox", adminSees: true},
	"GET /api/v1/mailboxes/{id}/folders":               {access: User, object: "mailbox", adminSees: true},
	"PUT /api/v1/mailboxes/{id}/folders":               {access: User, object: "mailbox", adminSees: true},
	"PUT /api/v1/mailboxes/{id}/outgoing":              {access: User, object: "mailbox", adminSees: true},
	"POST /api/v1/mailboxes/{id}/outgoing/check":       {access: User, object: "mailbox", adminSees: true},
	"GET /api/v1/mailboxes/{id}/settings":              {access: User, object: "mailbox", adminSees: true},
	"GET /api/v1/mailboxes/{id}/messages":              {access: User, object: "mailbox", adminSees: true},
	"GET /api/v1/mailboxes/{id}/messages/{message_id}": {access: User, object: "mailbox", adminSees: true},
	"POST /api/v1/mailboxes/{id}/sync":                 {access: User, object: "mailbox", adminSees: true},

	"GET /api/v1/senders":                     {access: User},
	"POST /api/v1/senders":                    {access: User},
	"GET /api/v1/senders/{id}":                {access: User, object: "sender", adminSees: true},
	"PATCH /api/v1/senders/{id}":              {access: User, object: "sender", adminSees: true},
	"DELETE /api/v1/senders/{id}":             {access: User, object: "sender", adminSees: true},
	"POST /api/v1/senders/confirmations":      {access: User},
	"POST /api/v1/senders/confirmations/{id}": {access: User, object: "confirmation"},

	"POST /api/v1/outbox":     {access: User},
	"POST /api/v1/outbox/raw": {access: User},
	"GET /api/v1/outbox/{id}": {access: User, object: "outbox", adminSees: true},
	"GET /api/v1/send-log":    {access: User},
}

// seedObjects gives Ann (user 2) objects with id 50 and Bob (user 3)
// objects with id 51 of every kind, and the system account 50.
func seedObjects(t *testing.T, e *itEnv) {
	t.Helper()
	now := time.Now().UTC()
	for _, o := range []struct {
		id, user int64
	}{{50, 2}, {51, 3}} {
		for _, q := range []string{
			`INSERT INTO mailboxes (id, user_id, email, imap_host, imap_port, imap_security, imap_login, imap_password, created_at, updated_at) VALUES (?, ?, 'x@example.com', 'imap.example.com', 993, 'ssl', 'x', 'x', ?, ?)`,
			`INSERT INTO senders (id, user_id, kind, email, created_at, updated_at) VALUES (?, ?, 'smtp', 'x@example.com', ?, ?)`,
			`INSERT INTO outbox (id, user_id, message_id, route_kind, route_id, from_addr, envelope_from, recipients, size, status, created_at, updated_at) VALUES (?, ?, 'm@x', 'system', 1, 'a@b', 'a@b', '[]', 0, 'sent', ?, ?)`,
			`INSERT INTO sender_confirmations (id, user_id, email, code_hash, expires_at, created_at) VALUES (?, ?, 'x@example.com', 'h', ?, ?)`,
		} {
			if err := e.db.Gorm.Exec(q, o.id, o.user, now, now).Error; err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.db.Gorm.Exec(`INSERT INTO smtp_accounts (id, email, host, port, security, auth, created_at, updated_at) VALUES (50, 's@example.com', 'smtp.example.com', 465, 'ssl', 'none', ?, ?)`, now, now).Error; err != nil {
		t.Fatal(err)
	}
}

func allowed(code int) bool {
	return code != http.StatusUnauthorized && code != http.StatusForbidden && code != http.StatusNotFound && code != http.StatusMethodNotAllowed
}

// TestAuthorizationMatrix: every route × (anonymous, another user, the
// owner, an admin) × (own object, foreign object). Anonymous is 401 on
// every API route; a user on an admin route 403; another user's object
// answers exactly as a missing one; the owner and (where the row says so)
// an admin get through the access layer.
func TestAuthorizationMatrix(t *testing.T) {
	probe := newITEnv(t, outgoing.Config{})
	seen := map[string]bool{}
	for _, rt := range probe.srv.Routes() {
		key := rt.Method + " " + rt.Path
		seen[key] = true
		row, ok := authMatrix[key]
		if !ok {
			t.Errorf("route %s has no row in the authorization matrix", key)
			continue
		}
		if row.access != rt.Access {
			t.Errorf("route %s: access %s, the matrix says %s", key, rt.Access, row.access)
		}
		t.Run(strings.NewReplacer("/", "_", "{", "", "}", "").Replace(key), func(t *testing.T) {
			e := newITEnv(t, outgoing.Config{})
			seedObjects(t, e)
			body := "{}"
			if rt.Method == "GET" || rt.Method == "DELETE" {
				body = ""
			}
			path := func(id string) string {
				return strings.NewReplacer("{id}", id, "{message_id}", "1").Replace(rt.Path)
			}
			if rt.Access != Public {
				if code, _ := e.callAs(t, rt.Method, path("50"), "", body); code != http.StatusUnauthorized {
					t.Errorf("anonymous: %d, want 401", code)
				}
			}
			if rt.Access == Admin {
				if code, _ := e.callAs(t, rt.Method, path("50"), "mst_ann", body); code != http.StatusForbidden {
					t.Errorf("a user: %d, want 403", code)
				}
			}
			if row.object == "" {
				for _, tok := range []string{"mst_ann", "mst_admin"} {
					if rt.Access == Admin && tok == "mst_ann" {
						continue
					}
					if code, b := e.callAs(t, rt.Method, path(""), tok, body); !allowed(code) {
						t.Errorf("%s: %d %s, want through the access layer", tok, code, b)
					}
				}
				return
			}
			mc, mb := e.callAs(t, rt.Method, path("999999"), "mst_bob", body)
			if row.object != "account" {
				// Bob on Ann's object, and Ann on Bob's: exactly as missing.
				if fc, fb := e.callAs(t, rt.Method, path("50"), "mst_bob", body); fc != mc || fb != mb {
					t.Errorf("another user's object: %d %s; a missing one: %d %s", fc, fb, mc, mb)
				}
				if fc, fb := e.callAs(t, rt.Method, path("51"), "mst_ann", body); fc != mc || fb != mb {
					t.Errorf("the owner on someone else's object: %d %s; a missing one: %d %s", fc, fb, mc, mb)
				}
			}
			if row.adminSees {
				id := "51" // Bob's
				if row.object == "account" {
					id = "50" // the system account
				}
				if code, b := e.callAs(t, rt.Method, path(id), "mst_admin", body); !allowed(code) {
					t.Errorf("an admin on a user's object: %d %s", code, b)
				}
			} else if code, b := e.callAs(t, rt.Method, path("51"), "mst_admin", body); code != http.StatusNotFound {
				t.Errorf("an admin on another user's %s: %d %s, want 404", row.object, code, b)
			}
			if rt.Access != Admin {
				if code, b := e.callAs(t, rt.Method, path("50"), "mst_ann", body); !allowed(code) {
					t.Errorf("the owner on their own object: %d %s", code, b)
				}
			}
		})
	}
	for key := range authMatrix {
		if !seen[key] {
			t.Errorf("the matrix has a row for %s, which is not a route", key)
		}
	}
}

func (e *itEnv) callAs(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	if token == "" {
		return e.callAnon(t, method, path, body)
	}
	return e.call(t, method, path, token, body)
}
