package web

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mailsync/mailsync/internal/i18n"
)

func TestSecurityHeadersOnEveryPage(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client("")
	for _, path := range []string{"/signin", "/no/such/page", "/accounts"} {
		resp, _ := c.get(path)
		h := resp.Header
		if got := h.Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'self'") || !strings.Contains(got, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy = %q", path, got)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: headers %v", path, h)
		}
	}
	// Static files: cacheable for a year under their current hash only.
	_, page := c.get("/signin")
	m := regexp.MustCompile(`href="(/static/app\.css\?v=[0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the sign-in page links no versioned stylesheet")
	}
	resp, _ := c.get(m[1])
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") ||
		!strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Errorf("GET %s = %d %v", m[1], resp.StatusCode, resp.Header)
	}
	if resp, _ := c.get("/static/app.css"); resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("an unversioned asset is cached: %v", resp.Header)
	}
	if resp, _ := c.get("/static/nope.js"); resp.StatusCode != 404 {
		t.Errorf("a missing asset = %d", resp.StatusCode)
	}
}

// The pages take every path outside the API; the API and the probes keep
// theirs.
func TestPagesAndAPIShareTheServer(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client("")
	cases := []struct {
		path, ctype string
		status      int
	}{
		{"/api/v1/me", "application/json", 401},
		{"/api/nope", "application/json", 404},
		{"/healthz", "", 200},
		{"/nope", "text/html", 404},
		{"/mailboxes", "", 303},
	}
	for _, cs := range cases {
		resp, _ := c.get(cs.path)
		if resp.StatusCode != cs.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), cs.ctype) {
			t.Errorf("GET %s = %d %s, want %d %s", cs.path, resp.StatusCode, resp.Header.Get("Content-Type"), cs.status, cs.ctype)
		}
	}
	if resp, _ := c.get("/mailboxes"); resp.Header.Get("Location") != "/signin?next=%2Fmailboxes" {
		t.Errorf("an anonymous visit goes to %q", resp.Header.Get("Location"))
	}
}

func sessionCookieOf(resp *http.Response) *http.Cookie {
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			return ck
		}
	}
	return nil
}

func TestSignInCookieFlags(t *testing.T) {
	cases := []struct {
		name       string
		opts       envOptions
		wantSecure bool
	}{
		{"plain http", envOptions{}, false},
		{"tls", envOptions{tls: true}, true},
		{"behind a TLS proxy", envOptions{webOpts: Options{SecureCookies: true}}, true},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			e := newEnv(t, &cs.opts)
			c := e.client("")
			c.get("/signin")
			resp, body := c.post("/signin", url.Values{"token": {"mst_wrong"}})
			wantStatus(t, "sign in with a wrong token", resp, body, http.StatusUnauthorized)
			wantContains(t, "the refusal", body, "This token is not valid")
			if sessionCookieOf(resp) != nil {
				t.Errorf("a wrong token got a session cookie")
			}
			resp, body = c.post("/signin", url.Values{"token": {e.adminToken}, "next": {"/log"}})
			wantStatus(t, "sign in", resp, body, http.StatusSeeOther)
			if loc := resp.Header.Get("Location"); loc != "/log" {
				t.Errorf("after sign-in: Location %q, want /log", loc)
			}
			ck := sessionCookieOf(resp)
			if ck == nil {
				t.Fatalf("no session cookie: %v", resp.Header["Set-Cookie"])
			}
			if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Secure != cs.wantSecure {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, Secure=%v", ck, cs.wantSecure)
			}
			if strings.Contains(ck.Value, e.adminToken) || len(ck.Value) < 40 {
				t.Errorf("the session cookie is not an opaque random id: %q", ck.Value)
			}
			if resp, _ := c.get("/accounts"); resp.StatusCode != 200 {
				t.Errorf("GET /accounts signed in = %d", resp.StatusCode)
			}
		})
	}
}

func TestSignInRedirectStaysOnSite(t *testing.T) {
	for _, next := range []string{"//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"} {
		if got := localPath(next); got != "/" {
			t.Errorf("localPath(%q) = %q, want /", next, got)
		}
	}
	if got := localPath("/log?status=sent"); got != "/log?status=sent" {
		t.Errorf("localPath() = %q", got)
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client("")
	// Sign-in without the pre-session token is refused.
	resp, body := c.post("/signin", url.Values{"token": {e.adminToken}, "csrf": {""}})
	wantStatus(t, "sign-in without a CSRF token", resp, body, http.StatusForbidden)
	c.signIn(e.adminToken)
	c.get("/accounts/new")
	form := url.Values{"email": {siteAddr}, "host": {"127.0.0.1"}, "port": {"25"}, "security": {"none"}, "auth": {"none"}}
	for _, bad := range []string{"", "forged", "p.forged"} {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		f.Set("csrf", bad)
		resp, body := c.post("/accounts", f)
		wantStatus(t, "POST /accounts with csrf "+strconv.Quote(bad), resp, body, http.StatusForbidden)
	}
	// Another session's token does not work here.
	other := e.client("")
	other.signIn(e.annToken)
	other.get("/mailboxes")
	f := url.Values{"csrf": {other.csrf}}
	resp, body = c.post("/signout", f)
	wantStatus(t, "sign-out with another session's token", resp, body, http.StatusForbidden)
	// A cross-site POST is refused before it reaches the page, token or not.
	req, _ := http.NewRequest("POST", e.srv.URL+"/signout", strings.NewReader("csrf="+url.QueryEscape(c.csrf)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, body = c.do(req)
	wantStatus(t, "cross-site POST", resp, body, http.StatusForbidden)
	if accts, _ := e.out.ListAccounts(context.Background()); len(accts) != 0 {
		t.Errorf("a refused POST saved %d accounts", len(accts))
	}
}

func TestSignOutAndRevokedToken(t *testing.T) {
	e := newEnv(t, nil)
	c := e.client("")
	c.signIn(e.annToken)
	c.get("/mailboxes")
	resp, body := c.post("/signout", nil)
	wantStatus(t, "sign out", resp, body, http.StatusSeeOther)
	if ck := sessionCookieOf(resp); ck == nil || ck.MaxAge >= 0 {
		t.Errorf("sign-out does not clear the cookie: %v", ck)
	}
	if resp, _ := c.get("/mailboxes"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after sign-out GET /mailboxes = %d, want a redirect to sign in", resp.StatusCode)
	}
	// Revoking the token ends the session at the next request.
	c.signIn(e.annToken)
	toks, _ := e.users.Tokens(context.Background(), e.annID)
	if err := e.users.RevokeToken(context.Background(), e.annID, toks[0].ID); err != nil {
		t.Fatal(err)
	}
	if resp, _ := c.get("/mailboxes"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("with a revoked token GET /mailboxes = %d, want a redirect to sign in", resp.StatusCode)
	}
}

func TestSessionExpiry(t *testing.T) {
	now := &testClock{}
	st := newSessionStore(Options{SessionIdle: 10, SessionMaxAge: 25, MaxSessions: 2, Now: now.Now}.withDefaults())
	s1 := st.create(1, "t1")
	now.add(9)
	if st.get(s1.id) == nil {
		t.Fatalf("a session used within the idle time is gone")
	}
	now.add(9)
	if st.get(s1.id) == nil {
		t.Fatalf("a session used within the idle time is gone")
	}
	now.add(11)
	if st.get(s1.id) != nil {
		t.Errorf("a session idle too long is alive")
	}
	s2 := st.create(2, "t2")
	for range 3 {
		now.add(9)
		st.get(s2.id)
	}
	if st.get(s2.id) != nil {
		t.Errorf("a session older than the maximum age is alive")
	}
	a, b := st.create(3, "a"), st.create(4, "b")
	now.add(1)
	st.get(b.id)
	st.create(5, "c")
	if st.get(a.id) != nil || st.get(b.id) == nil {
		t.Errorf("past MaxSessions the least recently used session must go")
	}
}

func TestLanguage(t *testing.T) {
	e := newEnv(t, nil)
	ru := e.client("ru-RU,ru;q=0.9,en;q=0.5")
	_, body := ru.get("/signin")
	wantContains(t, "the Russian sign-in page", body, `<html lang="ru">`, "Войти", "API-токен")
	resp, _ := ru.post("/lang", url.Values{"lang": {"en"}, "back": {"/signin"}})
	wantStatus(t, "switch to English", resp, "", http.StatusSeeOther)
	if resp.Header.Get("Location") != "/signin" {
		t.Errorf("the switch goes to %q", resp.Header.Get("Location"))
	}
	_, body = ru.get("/signin")
	wantContains(t, "the page after the switch", body, `<html lang="en">`, "Sign in")
	// The check hints come in the page's language too.
	ru.post("/lang", url.Values{"lang": {"ru"}, "back": {"/"}})
	ru.signIn(e.adminToken)
	ru.get("/accounts/new")
	_, body = ru.post("/accounts", accountForm3(e, "wrong"))
	wantContains(t, "the Russian refusal", body, "Проверка не прошла на этапе: Авторизация (AUTH)", i18n.T(i18n.Ru, "hint.auth_rejected")[:40])
	// A switch's back link never leaves the site.
	resp, _ = ru.post("/lang", url.Values{"lang": {"en"}, "back": {"//evil.example/"}})
	if resp.Header.Get("Location") != "/" {
		t.Errorf("the switch goes to %q", resp.Header.Get("Location"))
	}
}

func accountForm3(e *env, password string) url.Values {
	return url.Values{"active": {"on"}, "sender_name": {"Portal"}, "email": {siteAddr}, "host": {"localhost"},
		"port": {strconv.Itoa(e.smtp.Port())}, "security": {"starttls"}, "auth": {"login"}, "login": {siteAddr},
		"password": {password}, "daily_limit": {"0"}}
}

func TestAccountsPages(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	user := e.client("")
	user.signIn(e.annToken)
	if resp, body := user.get("/accounts"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a user's GET /accounts = %d %s", resp.StatusCode, body)
	}
	c := e.client("")
	c.signIn(e.adminToken)
	_, body := c.get("/accounts")
	wantContains(t, "the empty list", body, "No SMTP accounts yet.")
	_, body = c.get("/accounts/new")
	wantContains(t, "the form", body, `for="f-sender-name"`, `name="password" type="password"`, "Save and add another", "Apply", "Cancel")

	// A wrong password: 422, the failed step with its hint, nothing saved,
	// the password not rendered back.
	resp, body := c.post("/accounts", accountForm3(e, "wrong-Pa55"))
	wantStatus(t, "create with a wrong password", resp, body, http.StatusUnprocessableEntity)
	wantContains(t, "the refusal", body, "Login (AUTH)", "Nothing was saved", "app password")
	wantLacks(t, "the refusal", body, "wrong-Pa55")
	wantContains(t, "the form shown again", body, `value="`+siteAddr+`"`)
	if as, _ := e.out.ListAccounts(ctx); len(as) != 0 {
		t.Fatalf("a refused account was saved: %+v", as)
	}
	// Invalid input names the field.
	bad := accountForm3(e, sitePass)
	bad.Set("port", "seventy")
	resp, body = c.post("/accounts", bad)
	wantStatus(t, "a port that is not a number", resp, body, http.StatusBadRequest)
	wantContains(t, "the field error", body, `id="f-port-err"`, "Enter a whole number.")
	bad.Set("port", "0")
	resp, body = c.post("/accounts", bad)
	wantStatus(t, "port 0", resp, body, http.StatusBadRequest)
	wantContains(t, "the field error", body, `id="f-port-err"`, "Enter a port from 1 to 65535")
	// The Check button without JavaScript: the report, nothing saved.
	chk := accountForm3(e, sitePass)
	chk.Set("action", "check")
	resp, body = c.post("/accounts", chk)
	wantStatus(t, "check", resp, body, http.StatusOK)
	wantContains(t, "the check", body, "The check passed", "Recipient (RCPT TO)")
	// The Check button with JavaScript: a fragment.
	resp, body = c.post("/accounts/check", accountForm3(e, "wrong-Pa55"))
	wantStatus(t, "check fragment", resp, body, http.StatusOK)
	wantContains(t, "the fragment", body, "Login (AUTH)", "What to do:")
	wantLacks(t, "the fragment", body, "<html")
	if as, _ := e.out.ListAccounts(ctx); len(as) != 0 {
		t.Fatalf("a check saved an account")
	}

	// The right password: saved, the row in the list.
	save := accountForm3(e, sitePass)
	save.Set("action", "apply")
	resp, body = c.post("/accounts", save)
	wantStatus(t, "create", resp, body, http.StatusSeeOther)
	as, _ := e.out.ListAccounts(ctx)
	if len(as) != 1 {
		t.Fatalf("accounts after save: %+v", as)
	}
	id := strconv.FormatInt(as[0].ID, 10)
	if resp.Header.Get("Location") != "/accounts/"+id {
		t.Errorf("Apply goes to %q", resp.Header.Get("Location"))
	}
	_, body = c.get("/accounts/" + id)
	wantContains(t, "the edit form", body, "The SMTP account "+siteAddr+" is saved.", "Leave empty to keep the saved password.")
	wantLacks(t, "the edit form", body, sitePass)
	_, body = c.get("/accounts")
	wantContains(t, "the list", body, "<td>"+id+"</td>", siteAddr, "Portal", "localhost", strconv.Itoa(e.smtp.Port()), "STARTTLS", "success")
	// Change without a password keeps the stored one (and, with a changed
	// email, checks again).
	upd := accountForm3(e, "")
	upd.Set("sender_name", "Shop")
	upd.Set("action", "save")
	resp, body = c.post("/accounts/"+id, upd)
	wantStatus(t, "update", resp, body, http.StatusSeeOther)
	if a, _ := e.out.GetAccount(ctx, as[0].ID); a.SenderName != "Shop" {
		t.Errorf("sender name after update = %q", a.SenderName)
	}
	// Save and add another leads to a blank form.
	upd.Set("action", "add")
	resp, _ = c.post("/accounts/"+id, upd)
	if resp.Header.Get("Location") != "/accounts/new" {
		t.Errorf("Save and add another goes to %q", resp.Header.Get("Location"))
	}
	// A wrong password on change: refused, the stored one kept.
	var sealed, sealedAfter string
	e.db.Gorm.Raw("SELECT password FROM smtp_accounts WHERE id = ?", as[0].ID).Scan(&sealed)
	upd.Set("password", "wrong-Pa55")
	upd.Set("action", "save")
	resp, body = c.post("/accounts/"+id, upd)
	wantStatus(t, "update with a wrong password", resp, body, http.StatusUnprocessableEntity)
	e.db.Gorm.Raw("SELECT password FROM smtp_accounts WHERE id = ?", as[0].ID).Scan(&sealedAfter)
	if sealed == "" || sealed != sealedAfter {
		t.Errorf("the stored password changed after a refused update")
	}
	// Delete.
	c.get("/accounts/" + id)
	resp, _ = c.post("/accounts/"+id+"/delete", nil)
	wantStatus(t, "delete", resp, "", http.StatusSeeOther)
	if as, _ := e.out.ListAccounts(ctx); len(as) != 0 {
		t.Errorf("accounts after delete: %+v", as)
	}
	if resp, _ := c.get("/accounts/" + id); resp.StatusCode != 404 {
		t.Errorf("a deleted account's page = %d", resp.StatusCode)
	}
}

// Every catalogue key a template or handler names exists, in both
// languages (the i18n package's tests check that the languages agree).
func TestEveryPageStringIsInTheCatalogue(t *testing.T) {
	res := []*regexp.Regexp{
		regexp.MustCompile(`\.T "([a-z0-9_.]+)"`),
		regexp.MustCompile(`\(field \$ \$\w+ "[^"]+" "([^"]+)"`),
		regexp.MustCompile(`"(?:hint|placeholder)=([a-z0-9_.]+)"`),
		regexp.MustCompile(`\(\$\.With \$\w+ "[^"]+" "([a-z0-9_.]+)"\)`),
		regexp.MustCompile(`rc\.T\("([a-z0-9_.]+)"`),
		regexp.MustCompile(`"web\.([a-z0-9_.]+[a-z0-9_])"`),
		regexp.MustCompile(`s\.render\(w, r, rc, [^,]+, "[a-z_]+", "([a-z0-9_.]+)"`),
		regexp.MustCompile(`renderError\(w, r, rc, [^,]+, "([a-z0-9_.]+)"`),
		regexp.MustCompile(`s\.redirect\(w, r, rc, [^,]+, "([a-z0-9_.]+)"`),
	}
	files, _ := filepath.Glob("templates/*.html")
	gofiles, _ := filepath.Glob("*.go")
	n := 0
	for _, f := range append(files, gofiles...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range res {
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				n++
				if !i18n.Has("web." + m[1]) {
					t.Errorf("%s names web.%s, which the catalogue lacks", f, m[1])
				}
			}
		}
	}
	for _, kind := range []string{"minutes", "hours", "days"} {
		for _, form := range []string{"one", "few", "many"} {
			if !i18n.Has("web.ago." + kind + "." + form) {
				t.Errorf("the catalogue lacks web.ago.%s.%s", kind, form)
			}
		}
	}
	if n < 300 {
		t.Errorf("only %d catalogue references found: is the scan broken?", n)
	}
}

func TestAgoAndPlural(t *testing.T) {
	cases := []struct {
		lang i18n.Lang
		min  int
		want string
	}{
		{i18n.En, 0, "just now"},
		{i18n.En, 1, "1 minute ago"},
		{i18n.En, 7, "7 minutes ago"},
		{i18n.Ru, 1, "1 минуту назад"},
		{i18n.Ru, 3, "3 минуты назад"},
		{i18n.Ru, 7, "7 минут назад"},
		{i18n.Ru, 11, "11 минут назад"},
		{i18n.Ru, 21, "21 минуту назад"},
		{i18n.Ru, 22, "22 минуты назад"},
		{i18n.Ru, 60 * 5, "5 часов назад"},
		{i18n.Ru, 60 * 24 * 3, "3 дня назад"},
		{i18n.En, 60 * 24 * 3, "3 days ago"},
	}
	for _, c := range cases {
		if got := ago(c.lang, minutes(c.min)); got != c.want {
			t.Errorf("ago(%s, %d min) = %q, want %q", c.lang, c.min, got, c.want)
		}
	}
}
