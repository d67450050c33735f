package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/users"
)

type fakeUsers map[string]users.User

func (f fakeUsers) Authenticate(_ context.Context, token string) (users.User, error) {
	if u, ok := f[token]; ok {
		return u, nil
	}
	return users.User{}, apperr.New(apperr.ErrUnauthenticated, "unauthenticated", "a valid API token is required")
}

type fakeReady struct{ err error }

func (f fakeReady) Ready(context.Context) error { return f.err }

func newTestServer(t *testing.T, ready error) *Server {
	t.Helper()
	return New(Deps{
		Users: fakeUsers{
			"mst_admin": {ID: 1, Email: "admin@localhost", Admin: true},
			"mst_user":  {ID: 2, Email: "ann@example.com"},
		},
		Ready: fakeReady{ready},
	})
}

type errResp struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Field   string `json:"field"`
	} `json:"error"`
}

func do(t *testing.T, s *Server, method, path, token, body string) (*httptest.ResponseRecorder, errResp) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	var e errResp
	if rec.Code >= 400 {
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
			t.Errorf("%s %s = %d with body %q: not the error shape", method, path, rec.Code, rec.Body)
		}
	}
	return rec, e
}

func TestAuthOnEveryAPIRoute(t *testing.T) {
	s := newTestServer(t, nil)
	for _, rt := range s.Routes() {
		path := strings.NewReplacer("{id}", "1").Replace(rt.Path)
		if !strings.HasPrefix(rt.Path, "/api/") {
			if rt.Access != Public {
				t.Errorf("%s %s: probes and metrics are public", rt.Method, rt.Path)
			}
			continue
		}
		if rt.Access == Public {
			t.Errorf("%s %s is public; every /api route needs a token", rt.Method, rt.Path)
		}
		for _, tok := range []string{"", "mst_unknown"} {
			rec, e := do(t, s, rt.Method, path, tok, "")
			if rec.Code != 401 || e.Error.Code != "unauthenticated" || rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with token %q = %d %q, want 401 unauthenticated", rt.Method, path, tok, rec.Code, e.Error.Code)
			}
		}
		if rt.Access == Admin {
			if rec, e := do(t, s, rt.Method, path, "mst_user", ""); rec.Code != 403 || e.Error.Code != "admin_only" {
				t.Errorf("%s %s as a user = %d, want 403", rt.Method, path, rec.Code)
			}
		}
	}
}

func TestMe(t *testing.T) {
	s := newTestServer(t, nil)
	rec, _ := do(t, s, "GET", "/api/v1/me", "mst_user", "")
	var u userJSON
	if err := json.Unmarshal(rec.Body.Bytes(), &u); err != nil || rec.Code != 200 || u.Email != "ann@example.com" || u.Admin {
		t.Errorf("GET /api/v1/me = %d %s", rec.Code, rec.Body)
	}
	if rec, e := do(t, s, "GET", "/api/v1/nope", "mst_user", ""); rec.Code != 404 || e.Error.Code != "no_route" {
		t.Errorf("unknown route = %d %q", rec.Code, e.Error.Code)
	}
	if rec, _ := do(t, s, "POST", "/api/v1/me", "mst_user", ""); rec.Code != 405 {
		t.Errorf("POST /api/v1/me = %d, want 405", rec.Code)
	}
}

func TestProbes(t *testing.T) {
	ok := newTestServer(t, nil)
	if rec, _ := do(t, ok, "GET", "/healthz", "", ""); rec.Code != 200 {
		t.Errorf("/healthz = %d", rec.Code)
	}
	if rec, _ := do(t, ok, "GET", "/readyz", "", ""); rec.Code != 200 {
		t.Errorf("/readyz = %d", rec.Code)
	}
	down := newTestServer(t, errors.New("dial tcp 10.0.0.5:5432: secret detail"))
	rec, e := do(t, down, "GET", "/readyz", "", "")
	if rec.Code != 503 || e.Error.Code != "not_ready" || strings.Contains(rec.Body.String(), "secret detail") {
		t.Errorf("/readyz with the database down = %d %s", rec.Code, rec.Body)
	}
	if rec, _ := do(t, down, "GET", "/healthz", "", ""); rec.Code != 200 {
		t.Errorf("/healthz with the database down = %d, want 200 (the process is up)", rec.Code)
	}
}

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Name   string `json:"name"`
		Port   int    `json:"port"`
		Nested struct {
			On bool `json:"on"`
		} `json:"nested"`
	}
	cases := []struct {
		in     string
		ctype  string
		status int
		code   string
		field  string
	}{
		{`{"name":"a","port":25}`, "application/json", 200, "", ""},
		{``, "", 400, "invalid_json", ""},
		{`{"name":`, "", 400, "invalid_json", ""},
		{`{"name":"a"} {}`, "", 400, "invalid_json", ""},
		{`{"name":"a"}x`, "", 400, "invalid_json", ""},
		{`{"nmae":"a"}`, "", 400, "unknown_field", "nmae"},
		{`{"port":"25"}`, "", 400, "invalid_type", "port"},
		{`{"nested":{"on":"yes"}}`, "", 400, "invalid_type", "nested.on"},
		{`[1,2]`, "", 400, "invalid_type", ""},
		{`{"name":"` + strings.Repeat("a", 2000) + `"}`, "", 413, "body_too_large", ""},
		{`{"name":"a"}`, "text/plain", 400, "unsupported_media_type", ""},
	}
	for _, c := range cases {
		s := &Server{log: newTestServer(t, nil).log}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/x", strings.NewReader(c.in))
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		var v body
		err := decodeJSON(rec, req, &v, 1024)
		if err != nil {
			s.writeError(rec, req, err)
		} else {
			rec.WriteHeader(200)
		}
		var e errResp
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		if rec.Code != c.status || e.Error.Code != c.code || e.Error.Field != c.field {
			t.Errorf("decode %.40q = %d %q field %q, want %d %q field %q", c.in, rec.Code, e.Error.Code, e.Error.Field, c.status, c.code, c.field)
		}
	}
}

func TestInternalErrorsStayInTheLog(t *testing.T) {
	s := newTestServer(t, nil)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/x", nil)
	s.writeError(rec, req, errors.New("pq: password authentication failed for user postgres at 10.1.1.1"))
	var e errResp
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != 500 || e.Error.Code != "internal" || strings.Contains(rec.Body.String(), "10.1.1.1") {
		t.Errorf("internal error answered %d %s", rec.Code, rec.Body)
	}
}

func TestPanicIsA500(t *testing.T) {
	s := newTestServer(t, nil)
	h := s.wrap(route{Method: "GET", Path: "/boom", Access: Public, handle: func(http.ResponseWriter, *http.Request) error {
		panic("boom")
	}})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/boom", nil))
	var e errResp
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	if rec.Code != 500 || e.Error.Code != "internal" {
		t.Errorf("a panicking handler answered %d %s", rec.Code, rec.Body)
	}
}
