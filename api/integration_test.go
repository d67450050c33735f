package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/store/storetest"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
)

const (
	itAddr = "site@example.com"
	itPass = "It-Secret-Pa55"
)

type itEnv struct {
	srv  *Server
	db   *store.DB
	peer *testpeer.SMTPServer
	ca   *testpeer.CA
}

// newITEnv wires the real services over SQLite with three callers:
// mst_admin, mst_ann, mst_bob.
func newITEnv(t *testing.T, cfg outgoing.Config) *itEnv {
	t.Helper()
	db := storetest.Open(t, store.SQLite)
	fu := fakeUsers{}
	for i, name := range []string{"admin", "ann", "bob"} {
		id := int64(i + 1)
		if err := db.Gorm.Exec("INSERT INTO users (id, email, name, admin, created_at) VALUES (?, ?, ?, ?, ?)",
			id, name+"@example.com", name, id == 1, time.Now()).Error; err != nil {
			t.Fatal(err)
		}
		fu["mst_"+name] = users.User{ID: id, Email: name + "@example.com", Admin: id == 1}
	}
	keyText, _ := secret.GenerateKey()
	key, _ := secret.ParseKey(keyText)
	box := secret.NewBox(key)
	ca := testpeer.NewCA(t)
	dialer := &netguard.Dialer{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 3 * time.Second
	}
	out := outgoing.NewService(outgoing.Deps{DB: db, Box: box,
		Network: &outgoing.Network{Dialer: dialer, RootCAs: ca.Pool()}}, cfg)
	mbs := mailbox.NewService(mailbox.Deps{DB: db, Box: box, Outgoing: out,
		IMAP: &mailbox.IMAPNetwork{Dialer: dialer, RootCAs: ca.Pool()}}, mailbox.Config{})
	srv := New(Deps{Users: fu, Ready: db, Outgoing: out, Mailboxes: mbs, Senders: out, ProviderLookup: &mailbox.Lookup{}})
	peer := testpeer.StartSMTP(t, &testpeer.SMTPOptions{Mode: testpeer.SMTPStartTLS, TLS: ca.ServerTLS(t),
		Users: map[string]string{itAddr: itPass}})
	return &itEnv{srv: srv, db: db, peer: peer, ca: ca}
}

func (e *itEnv) callAnon(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	return e.do(t, method, path, "", body)
}

func (e *itEnv) call(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	return e.do(t, method, path, token, body)
}

func (e *itEnv) do(t *testing.T, method, path, token, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// No response to a foreign id differs from the one for a missing id, on
// every route that takes an object id.
func TestForeignIDsAnswerAsMissing(t *testing.T) {
	e := newITEnv(t, outgoing.Config{})
	now := time.Now().UTC()
	g := e.db.Gorm
	for _, q := range []string{
		`INSERT INTO mailboxes (id, user_id, email, imap_host, imap_port, imap_security, imap_login, imap_password, created_at, updated_at) VALUES (50, 2, 'ann@example.com', 'imap.example.com', 993, 'ssl', 'ann', 'x', ?, ?)`,
		`INSERT INTO senders (id, kind, user_id, email, created_at, updated_at) VALUES (50, 'smtp', 2, 'ann@example.com', ?, ?)`,
		`INSERT INTO outbox (id, message_id, user_id, route_kind, route_id, from_addr, envelope_from, recipients, size, status, created_at, updated_at) VALUES (50, 'x@y', 2, 'system', 1, 'a@b', 'a@b', '[]', 0, 'sent', ?, ?)`,
		`INSERT INTO sender_confirmations (id, user_id, email, code_hash, expires_at, created_at) VALUES (50, 2, 'ann@example.com', 'h', ?, ?)`,
	} {
		if err := g.Exec(q, now, now).Error; err != nil {
			t.Fatal(err)
		}
	}
	checked := 0
	for _, rt := range e.srv.Routes() {
		if !strings.Contains(rt.Path, "{id}") || rt.Access == Admin {
			continue
		}
		body := "{}"
		if rt.Method == "GET" || rt.Method == "DELETE" {
			body = ""
		}
		foreign := strings.NewReplacer("{id}", "50", "{message_id}", "1").Replace(rt.Path)
		missing := strings.NewReplacer("{id}", "999999", "{message_id}", "1").Replace(rt.Path)
		fc, fb := e.call(t, rt.Method, foreign, "mst_bob", body)
		mc, mb := e.call(t, rt.Method, missing, "mst_bob", body)
		// Input is validated before the object is looked up, so an empty
		// body may answer 400 — the same 400 for both.
		if (fc != http.StatusNotFound && fc != http.StatusBadRequest) || fc != mc || fb != mb {
			t.Errorf("%s %s: another user's id answers %d %s; a missing id %d %s", rt.Method, rt.Path, fc, fb, mc, mb)
		}
		if rt.Method == "GET" && strings.HasPrefix(rt.Path, "/api/v1/mailboxes/") && !strings.Contains(rt.Path, "messages") {
			if oc, ob := e.call(t, rt.Method, foreign, "mst_ann", body); oc != http.StatusOK {
				t.Errorf("%s %s: the owner gets %d %s", rt.Method, rt.Path, oc, ob)
			}
		}
		checked++
	}
	if checked < 12 {
		t.Errorf("only %d routes with an id were checked", checked)
	}
}

func TestSMTPAccountsOverHTTP(t *testing.T) {
	e := newITEnv(t, outgoing.Config{MaxMessageBytes: 64 << 10})
	account := func(password string) string {
		b, _ := json.Marshal(map[string]any{"active": true, "sender_name": "Portal", "email": itAddr, "host": "localhost",
			"port": e.peer.Port(), "security": "starttls", "auth": "login", "login": itAddr, "password": password})
		return string(b)
	}
	// A user may not touch accounts.
	if code, _ := e.call(t, "POST", "/api/v1/smtp-accounts", "mst_ann", account(itPass)); code != http.StatusForbidden {
		t.Errorf("POST smtp-accounts as a user = %d, want 403", code)
	}
	// Wrong password: 422 with the report, nothing saved.
	code, body := e.call(t, "POST", "/api/v1/smtp-accounts", "mst_admin", account("wrong"))
	var refused struct {
		Error struct {
			Code   string          `json:"code"`
			Detail outgoing.Report `json:"detail"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(body), &refused)
	if code != http.StatusUnprocessableEntity || refused.Error.Code != "check_failed" || refused.Error.Detail.Failed != outgoing.StepAuth {
		t.Fatalf("POST with a wrong password = %d %s", code, body)
	}
	if _, list := e.call(t, "GET", "/api/v1/smtp-accounts", "mst_admin", ""); !strings.Contains(list, `"accounts":[]`) {
		t.Errorf("accounts after a refused save: %s", list)
	}
	// Bad input names the field.
	for _, c := range []struct{ body, field string }{
		{`{"email":"x@example.com","host":"localhost","port":0,"security":"ssl","auth":"none"}`, "port"},
		{`{"email":"x@example.com","host":"localhost","port":25,"security":"ssl","auth":"none","colour":"red"}`, "colour"},
		{`{"email":"x@example.com","host":"localhost","port":"25"}`, "port"},
	} {
		code, body := e.call(t, "POST", "/api/v1/smtp-accounts", "mst_admin", c.body)
		if code != http.StatusBadRequest || !strings.Contains(body, `"field":"`+c.field+`"`) {
			t.Errorf("POST %s = %d %s, want 400 naming %s", c.body, code, body, c.field)
		}
	}
	// Right: 201, and no response ever shows the password.
	code, body = e.call(t, "POST", "/api/v1/smtp-accounts", "mst_admin", account(itPass))
	if code != http.StatusCreated {
		t.Fatalf("POST = %d %s", code, body)
	}
	var created struct {
		Account accountJSON `json:"account"`
	}
	_ = json.Unmarshal([]byte(body), &created)
	id := created.Account.ID
	for _, path := range []string{"/api/v1/smtp-accounts", "/api/v1/smtp-accounts/" + itoa(id)} {
		_, got := e.call(t, "GET", path, "mst_admin", "")
		if strings.Contains(got, itPass) || strings.Contains(got, `"password"`) {
			t.Errorf("GET %s shows a password: %s", path, got)
		}
	}
	if strings.Contains(body, itPass) {
		t.Errorf("the create answer shows the password")
	}
	// PATCH without a password keeps it; the check endpoint with the stored
	// account's id uses the stored password.
	if code, body := e.call(t, "PATCH", "/api/v1/smtp-accounts/"+itoa(id), "mst_admin", `{"sender_name":"Shop"}`); code != 200 || !strings.Contains(body, `"sender_name":"Shop"`) {
		t.Errorf("PATCH = %d %s", code, body)
	}
	if code, body := e.call(t, "POST", "/api/v1/smtp-accounts/check", "mst_admin", `{"id":`+itoa(id)+`,"port":`+itoa(int64(e.peer.Port()))+`}`); code != 200 || !strings.Contains(body, `"ok":true`) {
		t.Errorf("check with the stored password = %d %s", code, body)
	}
	// Outbox: accepted, then too large.
	code, body = e.call(t, "POST", "/api/v1/outbox", "mst_admin", `{"from":"`+itAddr+`","to":["a@example.org"],"subject":"Hi","text":"Hello"}`)
	if code != http.StatusAccepted || !strings.Contains(body, `"status":"queued"`) {
		t.Errorf("POST outbox = %d %s", code, body)
	}
	big := strings.Repeat("x", 70<<10)
	if code, body := e.call(t, "POST", "/api/v1/outbox", "mst_admin", `{"from":"`+itAddr+`","to":["a@example.org"],"subject":"Hi","text":"`+big+`"}`); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a message over the limit = %d %s, want 413", code, body)
	}
	if code, body := e.call(t, "POST", "/api/v1/outbox", "mst_admin", `{"from":"`+itAddr+`","to":["a@example.org"],"subject":"Hi\r\nBcc: v@example.org","text":"x"}`); code != 400 || !strings.Contains(body, `"field":"subject"`) {
		t.Errorf("header injection = %d %s, want 400 naming subject", code, body)
	}
	if code, body := e.call(t, "GET", "/api/v1/send-log?status=bogus", "mst_admin", ""); code != 400 || !strings.Contains(body, `"field":"status"`) {
		t.Errorf("send-log with a bad filter = %d %s", code, body)
	}
	if code, _ := e.call(t, "DELETE", "/api/v1/smtp-accounts/"+itoa(id), "mst_admin", ""); code != http.StatusNoContent {
		t.Errorf("DELETE = %d", code)
	}
}

// A rate-limited request carries Retry-After.
func TestRetryAfterHeader(t *testing.T) {
	e := newITEnv(t, outgoing.Config{ConfirmationAccount: itAddr})
	if code, body := e.call(t, "POST", "/api/v1/smtp-accounts", "mst_admin", `{"email":"`+itAddr+`","host":"localhost","port":`+itoa(int64(e.peer.Port()))+`,"security":"starttls","auth":"login","login":"`+itAddr+`","password":"`+itPass+`"}`); code != 201 {
		t.Fatalf("create relay = %d %s", code, body)
	}
	var last *httptest.ResponseRecorder
	for i := range 6 {
		req := httptest.NewRequest("POST", "/api/v1/senders/confirmations", bytes.NewReader([]byte(`{"email":"x`+itoa(int64(i))+`@example.net"}`)))
		req.Header.Set("Authorization", "Bearer mst_ann")
		last = httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(last, req)
	}
	if last.Code != http.StatusTooManyRequests || last.Header().Get("Retry-After") == "" {
		t.Errorf("6th confirmation = %d, Retry-After %q; want 429 with the header", last.Code, last.Header().Get("Retry-After"))
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Creating a sender, per kind × caller: only own-SMTP senders are created
// here (for the caller); an address is confirmed by a code, mailbox
// senders come from mailboxes and system ones from the admin's accounts.
func TestCreateSenderKindCaller(t *testing.T) {
	e := newITEnv(t, outgoing.Config{})
	smtp := `"smtp":{"host":"localhost","port":` + itoa(int64(e.peer.Port())) + `,"security":"starttls","login":"` + itAddr + `","password":"` + itPass + `"}`
	for _, tok := range []string{"mst_ann", "mst_bob", "mst_admin"} {
		for _, c := range []struct {
			kind, body string
			status     int
			code       string
		}{
			{"smtp", `{"kind":"smtp","email":"` + itAddr + `",` + smtp + `}`, http.StatusCreated, ""},
			{"address", `{"kind":"address","email":"x@example.net"}`, http.StatusBadRequest, "use_confirmation"},
			{"mailbox", `{"kind":"mailbox","email":"x@example.net"}`, http.StatusBadRequest, "invalid_choice"},
			{"system", `{"kind":"system","email":"x@example.net"}`, http.StatusBadRequest, "invalid_choice"},
		} {
			code, body := e.call(t, "POST", "/api/v1/senders", tok, c.body)
			if code != c.status || (c.code != "" && !strings.Contains(body, `"code":"`+c.code+`"`)) {
				t.Errorf("create %s sender as %s = %d %s, want %d %s", c.kind, tok, code, body, c.status, c.code)
			}
			if c.kind == "smtp" && code == http.StatusCreated {
				var out struct {
					Sender senderJSON `json:"sender"`
				}
				_ = json.Unmarshal([]byte(body), &out)
				want := map[string]int64{"mst_ann": 2, "mst_bob": 3, "mst_admin": 1}[tok]
				if out.Sender.Owner == nil || *out.Sender.Owner != want || strings.Contains(body, itPass) {
					t.Errorf("the sender created by %s is owned by %v (want %d), or shows the password", tok, out.Sender.Owner, want)
				}
			}
		}
	}
}
