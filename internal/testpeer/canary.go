package testpeer

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"html"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
)

// CanaryPassword is a password that suites use where a secret must never
// show: in logs, reports, responses, metrics or the database. Its '+', '/',
// '=' and '&' make its URL-encoded forms differ from it, and no code or
// fixture uses it for anything else, so any sight of it is a leak.
const CanaryPassword = "Canary+7f3a/9c1e=Pa55&word"

// SecretForms returns the encodings in which secret could show in a byte
// stream, keyed by a name for the failure message: as is, base64 (standard,
// URL and unpadded), inside AUTH PLAIN's "\x00login\x00secret" (and with
// login as the authorization identity too), hex, URL-encoded, and escaped
// for JSON, HTML and JavaScript (a JSON log line or response writes '&' as
// \u0026, a page as &amp;). login may be empty.
func SecretForms(login, secret string) map[string]string {
	forms := map[string]string{"plain": secret}
	add := func(name, raw string) {
		for enc, e := range map[string]*base64.Encoding{
			"base64": base64.StdEncoding, "base64url": base64.URLEncoding,
			"base64 raw": base64.RawStdEncoding, "base64url raw": base64.RawURLEncoding,
		} {
			forms[name+" "+enc] = e.EncodeToString([]byte(raw))
		}
	}
	add("password", secret)
	if login != "" {
		add("AUTH PLAIN", "\x00"+login+"\x00"+secret)
		add("AUTH PLAIN with authzid", login+"\x00"+login+"\x00"+secret)
	}
	forms["hex"] = hex.EncodeToString([]byte(secret))
	forms["HEX"] = strings.ToUpper(hex.EncodeToString([]byte(secret)))
	if q := url.QueryEscape(secret); q != secret {
		forms["query-escaped"] = q
	}
	if p := url.PathEscape(secret); p != secret {
		forms["path-escaped"] = p
	}
	if j, err := json.Marshal(secret); err == nil && string(j[1:len(j)-1]) != secret {
		forms["JSON-escaped"] = string(j[1 : len(j)-1])
	}
	if h := template.HTMLEscapeString(secret); h != secret {
		forms["HTML-escaped"] = h
	}
	if h := html.EscapeString(secret); h != secret {
		forms["HTML-escaped (html)"] = h
	}
	if j := template.JSEscapeString(secret); j != secret {
		forms["JS-escaped"] = j
	}
	return forms
}

// FindSecret returns the names of the forms of secret (see SecretForms)
// that b contains, sorted; nil when none.
func FindSecret(b []byte, login, secret string) []string {
	var found []string
	for name, f := range SecretForms(login, secret) {
		if f != "" && bytes.Contains(b, []byte(f)) {
			found = append(found, name)
		}
	}
	slices.Sort(found)
	return found
}

// CanaryHandler wraps next for a test: every record is rendered as text and
// as JSON at whatever level (the secret type's LogValue included) and the
// test fails when a form of CanaryPassword (SecretForms, with each of
// logins for AUTH PLAIN) or of one of extra shows in it. Records logged
// after the test's cleanup began are passed on unchecked.
func CanaryHandler(t testing.TB, next slog.Handler, logins []string, extra ...string) slog.Handler {
	h := newCanaryHandler(t.Errorf, next, logins, extra...)
	t.Cleanup(func() {
		h.st.mu.Lock()
		h.st.done = true
		h.st.mu.Unlock()
	})
	return h
}

func newCanaryHandler(report func(format string, args ...any), next slog.Handler, logins []string, extra ...string) *canaryHandler {
	st := &canaryState{report: report}
	for _, secret := range append([]string{CanaryPassword}, extra...) {
		for _, login := range append([]string{""}, logins...) {
			for name, f := range SecretForms(login, secret) {
				st.forms = append(st.forms, canaryForm{name: name, value: []byte(f)})
			}
		}
	}
	opts := &slog.HandlerOptions{Level: slog.LevelDebug}
	return &canaryHandler{st: st, next: next,
		text: slog.NewTextHandler(&st.buf, opts), json: slog.NewJSONHandler(&st.buf, opts)}
}

type canaryForm struct {
	name  string
	value []byte
}

type canaryState struct {
	report func(format string, args ...any)
	forms  []canaryForm
	mu     sync.Mutex // guards buf and done; held while a record is checked
	buf    bytes.Buffer
	done   bool
}

type canaryHandler struct {
	st         *canaryState
	next       slog.Handler
	text, json slog.Handler // render into st.buf
}

func (h *canaryHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *canaryHandler) Handle(ctx context.Context, r slog.Record) error {
	st := h.st
	st.mu.Lock()
	if !st.done {
		st.buf.Reset()
		_ = h.text.Handle(ctx, r.Clone())
		_ = h.json.Handle(ctx, r.Clone())
		for _, f := range st.forms {
			if bytes.Contains(st.buf.Bytes(), f.value) {
				st.report("a log record shows the canary secret (%s): %s", f.name, strings.TrimSpace(st.buf.String()))
				break
			}
		}
	}
	st.mu.Unlock()
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *canaryHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &canaryHandler{st: h.st, next: h.next.WithAttrs(as), text: h.text.WithAttrs(as), json: h.json.WithAttrs(as)}
}

func (h *canaryHandler) WithGroup(name string) slog.Handler {
	return &canaryHandler{st: h.st, next: h.next.WithGroup(name), text: h.text.WithGroup(name), json: h.json.WithGroup(name)}
}
