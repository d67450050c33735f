package web

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/outgoing"
	imapsync "github.com/mailsync/mailsync/sync"
)

// connectForm is the connect form for ann's mailbox on an IMAP server
// with implicit TLS.
func connectForm(host string, port int, password string) url.Values {
	return url.Values{"email": {annAddr}, "name": {"Ann Example"}, "password": {password}, "provider": {""},
		"imap.host": {host}, "imap.port": {strconv.Itoa(port)}, "imap.security": {"ssl"}, "imap.login": {annAddr},
		"action": {"connect"}}
}

func outgoingForm(e *env, enabled bool, password string) url.Values {
	f := url.Values{"smtp.host": {"localhost"}, "smtp.port": {strconv.Itoa(e.smtp.Port())}, "smtp.security": {"starttls"},
		"smtp.auth": {"login"}, "smtp.login": {annAddr}, "smtp.password": {password}, "save_copy": {"on"}, "action": {"save"}}
	if enabled {
		f.Set("enabled", "on")
	}
	return f
}

func TestMailboxPages(t *testing.T) {
	e := newEnv(t, nil)
	imapSrv := e.startIMAP()
	ctx := context.Background()
	c := e.client("")
	c.signIn(e.annToken)
	_, body := c.get("/mailboxes")
	wantContains(t, "the empty list", body, "No mailboxes connected yet.")
	_, body = c.get("/mailboxes/new")
	wantContains(t, "the connect form", body, `for="f-provider"`, "Gmail / Google Workspace", `data-host="imap.gmail.com"`, "Find settings")

	// A preset by its choice: "find settings" fills its fields in.
	resp, body := c.post("/mailboxes", url.Values{"email": {"someone@gmail.com"}, "provider": {"gmail"}, "action": {"lookup"}})
	wantStatus(t, "lookup", resp, body, http.StatusOK)
	wantContains(t, "the filled preset", body, `value="imap.gmail.com"`, `value="993"`, `value="someone@gmail.com"`)
	// No preset for the address: say so.
	_, body = c.post("/mailboxes", url.Values{"email": {"x@corp.example"}, "action": {"lookup"}})
	wantContains(t, "no preset", body, "No preset matches this address")

	// A wrong password: the IMAP report, nothing saved.
	resp, body = c.post("/mailboxes", connectForm(imapSrv.Host(), imapSrv.Port(), "wrong-Pa55"))
	wantStatus(t, "connect with a wrong password", resp, body, http.StatusUnprocessableEntity)
	wantContains(t, "the refusal", body, "Login (LOGIN)", "Nothing was saved")
	wantLacks(t, "the refusal", body, "wrong-Pa55")
	if list, _ := e.mbs.List(ctx, outgoing.Caller{UserID: e.annID}); len(list) != 0 {
		t.Fatalf("a refused mailbox was saved")
	}
	resp, body = c.post("/mailboxes", connectForm(imapSrv.Host(), imapSrv.Port(), annPass))
	wantStatus(t, "connect", resp, body, http.StatusSeeOther)
	settingsPath := resp.Header.Get("Location")
	list, _ := e.mbs.List(ctx, outgoing.Caller{UserID: e.annID})
	if len(list) != 1 || settingsPath != "/mailboxes/"+strconv.FormatInt(list[0].ID, 10) {
		t.Fatalf("after connect: %v, Location %q", list, settingsPath)
	}
	mbID := list[0].ID
	_, body = c.get(settingsPath)
	wantContains(t, "the settings dialog", body, "The mailbox "+annAddr+" is connected.", "Settings for outgoing mail",
		"Send via external SMTP", "Save a copy on the mail server", "Set up folders for synchronisation", "Not synchronised yet.",
		`data-check-url="`+settingsPath+`/outgoing/check"`)
	wantLacks(t, "the settings dialog", body, annPass, `id="out-status"`)
	_, body = c.get("/mailboxes")
	wantContains(t, "the list", body, annAddr, "waiting for the first sync", "never")

	// The Check button: a fragment with the report; nothing saved.
	resp, body = c.post(settingsPath+"/outgoing/check", outgoingForm(e, true, "wrong-Pa55"))
	wantStatus(t, "check fragment", resp, body, http.StatusOK)
	wantContains(t, "the fragment", body, "Login (AUTH)", "What to do:")
	// Turning external SMTP on with a wrong password is refused with the
	// report; nothing is saved and no sender appears.
	resp, body = c.post(settingsPath+"/outgoing", outgoingForm(e, true, "wrong-Pa55"))
	wantStatus(t, "turn on with a wrong password", resp, body, http.StatusUnprocessableEntity)
	wantContains(t, "the refusal", body, "Login (AUTH)", "Nothing was saved")
	if mb, _ := e.mbs.Get(ctx, outgoing.Caller{UserID: e.annID}, mbID); mb.OutEnabled {
		t.Fatalf("a refused outgoing block was saved")
	}
	// Right: saved; the settings view checks it on open and shows the
	// green status; the sender appears, not deletable, with the reason.
	resp, body = c.post(settingsPath+"/outgoing", outgoingForm(e, true, annPass))
	wantStatus(t, "turn on", resp, body, http.StatusSeeOther)
	_, body = c.get(settingsPath)
	wantContains(t, "the settings after turning on", body, `id="out-status"`, "Sending with the current settings works!",
		`value="localhost"`, "checked")
	wantLacks(t, "the settings after turning on", body, annPass)
	_, body = c.get("/senders")
	wantContains(t, "the senders", body, annAddr, "Mailbox from Mail", "Turn off")
	// The password changes on the server: the status shows the error on
	// the next open (after the status cache's TTL, which a save resets).
	e.smtp.SetPassword(annAddr, "Changed-Pa55")
	resp, body = c.post(settingsPath+"/outgoing", outgoingForm(e, true, ""))
	wantStatus(t, "save again with the kept password", resp, body, http.StatusUnprocessableEntity)
	wantContains(t, "the refusal", body, "Login (AUTH)")
	e.smtp.SetPassword(annAddr, annPass)
	// Turning it off removes the sender.
	resp, body = c.post(settingsPath+"/outgoing", outgoingForm(e, false, ""))
	wantStatus(t, "turn off", resp, body, http.StatusSeeOther)
	_, body = c.get("/senders")
	wantLacks(t, "the senders after turning off", body, `data-sender="`+annAddr+`"`)

	// IMAP settings: a wrong new password is refused with the report.
	imapForm := url.Values{"name": {"Ann"}, "imap.host": {imapSrv.Host()}, "imap.port": {strconv.Itoa(imapSrv.Port())},
		"imap.security": {"ssl"}, "imap.login": {annAddr}, "imap.password": {"wrong-Pa55"}}
	resp, body = c.post(settingsPath, imapForm)
	wantStatus(t, "IMAP with a wrong password", resp, body, http.StatusUnprocessableEntity)
	wantContains(t, "the IMAP refusal", body, "Login (LOGIN)")
	imapForm.Del("imap.password")
	resp, body = c.post(settingsPath, imapForm)
	wantStatus(t, "rename", resp, body, http.StatusSeeOther)
	if mb, _ := e.mbs.Get(ctx, outgoing.Caller{UserID: e.annID}, mbID); mb.Name != "Ann" {
		t.Errorf("name after save = %q", mb.Name)
	}

	// Folders.
	_, body = c.get(settingsPath + "/folders")
	wantContains(t, "the folders", body, `value="INBOX" checked`, `value="Trash"`)
	resp, body = c.post(settingsPath+"/folders", url.Values{"folder": {"INBOX", "Trash"}})
	wantStatus(t, "choose folders", resp, body, http.StatusSeeOther)
	folders, _ := e.mbs.Folders(ctx, outgoing.Caller{UserID: e.annID}, mbID)
	for _, f := range folders {
		if f.Selected != (f.Name == "INBOX" || f.Name == "Trash") {
			t.Errorf("folder %s selected = %v", f.Name, f.Selected)
		}
	}
	resp, body = c.post(settingsPath+"/folders", url.Values{"folder": {"Nope"}})
	wantStatus(t, "an unknown folder", resp, body, http.StatusBadRequest)
	wantContains(t, "the refusal", body, "The mailbox has no such folder.")

	// Without the sync engine, the message pages say so.
	_, body = c.get(settingsPath + "/messages")
	wantContains(t, "the message list", body, `id="sync-unavailable"`)

	// Another user sees nothing of it.
	admin := e.client("")
	admin.signIn(e.adminToken)
	bob, _, err := e.users.CreateWithToken(ctx, "bob@example.com", "Bob", false)
	if err != nil {
		t.Fatal(err)
	}
	bobTok, _ := e.users.IssueToken(ctx, bob.ID, "web")
	other := e.client("")
	other.signIn(bobTok.Reveal())
	for _, p := range []string{settingsPath, settingsPath + "/folders", settingsPath + "/messages"} {
		if resp, _ := other.get(p); resp.StatusCode != 404 {
			t.Errorf("another user's GET %s = %d, want 404", p, resp.StatusCode)
		}
	}
	other.get("/mailboxes")
	if resp, _ := other.post(settingsPath+"/delete", nil); resp.StatusCode != 404 {
		t.Errorf("another user's delete = %d, want 404", resp.StatusCode)
	}
	// Disconnect.
	c.get(settingsPath)
	resp, _ = c.post(settingsPath+"/delete", nil)
	wantStatus(t, "disconnect", resp, "", http.StatusSeeOther)
	if list, _ := e.mbs.List(ctx, outgoing.Caller{UserID: e.annID}); len(list) != 0 {
		t.Errorf("mailboxes after disconnect: %v", list)
	}
}

func TestSendersPages(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	// The confirmation account: a system account.
	if _, _, err := e.out.CreateAccount(ctx, outgoing.Caller{Admin: true}, accountInput3(e)); err != nil {
		t.Fatal(err)
	}
	c := e.client("")
	c.signIn(e.annToken)
	_, body := c.get("/senders")
	wantContains(t, "the senders", body, "Add sender", "SMTP servers")
	_, body = c.get("/senders/smtp")
	wantContains(t, "the own-SMTP form", body, `for="f-smtp-host"`, `name="smtp.password" type="password"`)
	form := url.Values{"email": {ownAddr}, "name": {"CRM"}, "smtp.host": {"localhost"}, "smtp.port": {strconv.Itoa(e.smtp.Port())},
		"smtp.security": {"starttls"}, "smtp.auth": {"login"}, "smtp.login": {ownAddr}, "smtp.password": {"wrong-Pa55"}}
	resp, body := c.post("/senders/smtp", form)
	wantStatus(t, "own SMTP with a wrong password", resp, body, http.StatusUnprocessableEntity)
	wantContains(t, "the refusal", body, "Login (AUTH)", "Nothing was saved")
	wantLacks(t, "the refusal", body, "wrong-Pa55")
	form.Set("smtp.host", "smtp://bad")
	resp, body = c.post("/senders/smtp", form)
	wantStatus(t, "a bad host", resp, body, http.StatusBadRequest)
	wantContains(t, "the field error", body, `id="f-smtp-host-err"`)
	form.Set("smtp.host", "localhost")
	form.Set("smtp.password", ownPass)
	resp, body = c.post("/senders/smtp", form)
	wantStatus(t, "own SMTP", resp, body, http.StatusSeeOther)
	_, body = c.get("/senders")
	wantContains(t, "the senders", body, "The sender "+ownAddr+" is added.", ownAddr, "Own SMTP server", "/senders/delete/")
	// The compose form offers it in the From picker.
	_, body = c.get("/compose")
	wantContains(t, "the From picker", body, "CRM &lt;"+ownAddr+"&gt;", "Add sender", "SMTP servers")
	// Delete.
	id := regexp.MustCompile(`/senders/delete/(\d+)`).FindStringSubmatch(body)
	if id == nil {
		_, body = c.get("/senders")
		id = regexp.MustCompile(`/senders/delete/(\d+)`).FindStringSubmatch(body)
	}
	resp, _ = c.post("/senders/delete/"+id[1], nil)
	wantStatus(t, "delete sender", resp, "", http.StatusSeeOther)
	_, body = c.get("/senders")
	wantLacks(t, "the senders after delete", body, `data-sender="`+ownAddr+`"`)

	// The confirmation-code flow: the code is mailed through the system
	// account; a wrong code is refused; the right one adds the sender.
	_, body = c.get("/senders/confirm")
	wantContains(t, "the confirmation form", body, "We will send you a message with a confirmation code")
	resp, body = c.post("/senders/confirm", url.Values{"email": {"sales@example.org"}, "name": {"Sales"}})
	wantStatus(t, "ask for a code", resp, body, http.StatusSeeOther)
	codePath := resp.Header.Get("Location")
	e.send()
	msgs := e.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("confirmation messages sent: %d", len(msgs))
	}
	code := regexp.MustCompile(`\b(\d{6})\b`).FindStringSubmatch(string(msgs[0].Data))
	if code == nil {
		t.Fatalf("no code in the message:\n%s", msgs[0].Data)
	}
	_, body = c.get(codePath)
	wantContains(t, "the code form", body, "A message with the code has been sent to sales@example.org.", "Enter the code from the message sent to sales@example.org")
	wrong := "000000"
	if code[1] == wrong {
		wrong = "111111"
	}
	resp, body = c.post(strings.SplitN(codePath, "?", 2)[0], url.Values{"code": {wrong}, "email": {"sales@example.org"}})
	wantStatus(t, "a wrong code", resp, body, http.StatusUnprocessableEntity)
	wantContains(t, "the refusal", body, "The code is wrong.")
	resp, body = c.post(strings.SplitN(codePath, "?", 2)[0], url.Values{"code": {code[1]}})
	wantStatus(t, "the right code", resp, body, http.StatusSeeOther)
	_, body = c.get("/senders")
	wantContains(t, "the senders", body, "sales@example.org", "Confirmed address")
}

func accountInput3(e *env) outgoing.AccountInput {
	active, shared := true, true
	name, email, host, port, login := "Portal", siteAddr, "localhost", e.smtp.Port(), siteAddr
	sec, auth := outgoing.SecuritySTARTTLS, outgoing.AuthLogin
	pw := secretOf(sitePass)
	return outgoing.AccountInput{Active: &active, SharedWithUsers: &shared, SenderName: &name, Email: &email, Host: &host,
		Port: &port, Security: &sec, Auth: &auth, Login: &login, Password: &pw}
}

func TestComposeAndSendLog(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	a, _, err := e.out.CreateAccount(ctx, outgoing.Caller{Admin: true}, accountInput3(e))
	if err != nil {
		t.Fatal(err)
	}
	c := e.client("")
	c.signIn(e.annToken)
	resp, body := c.post("/compose", url.Values{"to": {"x@example.org"}})
	wantStatus(t, "compose without a sender", resp, body, http.StatusBadRequest)
	wantContains(t, "the refusal", body, `id="f-sender-id-err"`)
	c.get("/compose")
	send := url.Values{"sender_id": {"system-" + strconv.FormatInt(a.ID, 10)}, "to": {"x@example.org, y@example.org"},
		"subject": {"Hello from the deal"}, "text": {"Hi"}, "crm_type": {"deal"}, "crm_id": {"testdeal"}}
	bad := url.Values{}
	for k, v := range send {
		bad[k] = v
	}
	bad.Set("to", "not an address")
	resp, body = c.post("/compose", bad)
	wantStatus(t, "compose to a bad address", resp, body, http.StatusBadRequest)
	wantContains(t, "the field error", body, `id="f-to-err"`)
	resp, body = c.post("/compose", send)
	wantStatus(t, "compose", resp, body, http.StatusSeeOther)
	send.Set("subject", "Second")
	c.get("/compose")
	c.post("/compose", send)
	e.send()
	_, body = c.get("/log")
	wantContains(t, "the send log", body, "Hello from the deal", "Second", "x@example.org, y@example.org", siteAddr, "sent", "Deal testdeal",
		"System SMTP account")
	// Filters and paging.
	_, body = c.get("/log?status=failed")
	wantContains(t, "failed only", body, "No sending attempts match.")
	resp, body = c.get("/log?since=yesterday")
	wantStatus(t, "a bad date", resp, body, http.StatusBadRequest)
	wantContains(t, "the field error", body, `id="f-since-err"`)
	_, body = c.get("/log?limit=25&crm_type=deal&crm_id=testdeal")
	wantContains(t, "by CRM record", body, "Hello from the deal")
	_, body = c.get("/log?limit=1&status=sent")
	next := regexp.MustCompile(`id="next-page"|href="(/log\?[^"]*cursor=[^"]*)"`).FindAllStringSubmatch(body, -1)
	var nextURL string
	for _, m := range next {
		if m[1] != "" {
			nextURL = strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	// The outbox may log the two in either order: one on each page.
	first := "Second"
	if strings.Contains(body, "Hello from the deal") {
		first = "Hello from the deal"
	}
	if nextURL == "" || strings.Contains(body, "Second") == strings.Contains(body, "Hello from the deal") {
		t.Fatalf("the first page of one: next %q\n%s", nextURL, body)
	}
	_, body = c.get(nextURL)
	wantContains(t, "the second page", body, "First page")
	if strings.Contains(body, first) || !strings.Contains(body, "Second") && !strings.Contains(body, "Hello from the deal") {
		t.Errorf("the second page does not hold the other message:\n%s", body)
	}
	// Another user's log is empty; the admin's has everything and the
	// account filter.
	admin := e.client("")
	admin.signIn(e.adminToken)
	_, body = admin.get("/log?account=" + strconv.FormatInt(a.ID, 10))
	wantContains(t, "the admin's log", body, "Hello from the deal", `<option value="`+strconv.FormatInt(a.ID, 10)+`" selected>`)
}

func TestUsersPages(t *testing.T) {
	e := newEnv(t, nil)
	user := e.client("")
	user.signIn(e.annToken)
	if resp, _ := user.get("/users"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a user's GET /users = %d", resp.StatusCode)
	}
	c := e.client("")
	c.signIn(e.adminToken)
	_, body := c.get("/users")
	wantContains(t, "the users", body, annAddr, "admin@example.com", "Add a user")
	resp, body := c.post("/users", url.Values{"email": {"not an address"}})
	wantStatus(t, "a bad address", resp, body, http.StatusBadRequest)
	wantContains(t, "the field error", body, `id="f-email-err"`)
	resp, body = c.post("/users", url.Values{"email": {"carol@example.com"}, "name": {"Carol"}})
	wantStatus(t, "add a user", resp, body, http.StatusCreated)
	tok := regexp.MustCompile(`<code class="token">(mst_[^<]+)</code>`).FindStringSubmatch(body)
	if tok == nil {
		t.Fatalf("the new token is not shown:\n%s", body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("the page with a token may be cached")
	}
	_, body = c.get("/users")
	wantLacks(t, "the users page later", body, tok[1])
	carol := e.client("ru")
	carol.signIn(tok[1])
	_, body = carol.get("/mailboxes")
	wantContains(t, "carol's page", body, "carol@example.com", "Подключить ящик")
	// Issue another token, list, revoke.
	u, _ := e.users.ByEmail(context.Background(), "carol@example.com")
	path := "/users/" + strconv.FormatInt(u.ID, 10)
	c.get(path)
	resp, body = c.post(path+"/tokens", url.Values{"name": {""}})
	wantStatus(t, "a token without a name", resp, body, http.StatusBadRequest)
	resp, body = c.post(path+"/tokens", url.Values{"name": {"CRM integration"}})
	wantStatus(t, "issue a token", resp, body, http.StatusCreated)
	wantContains(t, "the user page", body, "A new API token is issued.", "CRM integration", "first")
	toks, _ := e.users.Tokens(context.Background(), u.ID)
	resp, _ = c.post(path+"/tokens/"+strconv.FormatInt(toks[0].ID, 10)+"/revoke", nil)
	wantStatus(t, "revoke", resp, "", http.StatusSeeOther)
	if resp, _ := carol.get("/mailboxes"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a session on a revoked token goes on: %d", resp.StatusCode)
	}
	if resp, _ := c.post(path+"/tokens/"+strconv.FormatInt(toks[0].ID, 10)+"/revoke", nil); resp.StatusCode != 404 {
		t.Errorf("revoking twice = %d", resp.StatusCode)
	}
}

// fakeMessages is the sync engine's query side, for the message pages.
type fakeMessages struct{}

func (fakeMessages) ListMessages(_ context.Context, _ int64, q imapsync.ListQuery) (imapsync.MessagePage, error) {
	if q.Folder == "Nope" {
		return imapsync.MessagePage{}, apperr.Invalid("folder", "unknown_folder", "no folder")
	}
	at := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	m := imapsync.MessageSummary{ID: 7, Folder: "INBOX", UID: 1, InternalDate: at, Subject: "Quarterly <report>",
		From: []imapsync.Address{{Name: "Bob", Email: "bob@example.org"}}, Size: 1234, Snippet: "Numbers inside"}
	p := imapsync.MessagePage{Messages: []imapsync.MessageSummary{m}}
	if q.Cursor == "" {
		p.NextCursor = "c2"
	}
	return p, nil
}

func (fakeMessages) Message(_ context.Context, _ int64, id int64) (imapsync.MessageDetail, error) {
	if id != 7 {
		return imapsync.MessageDetail{}, apperr.NotFound("message")
	}
	d := imapsync.MessageDetail{}
	d.ID, d.Subject, d.Folder = 7, "Quarterly <report>", "INBOX"
	d.From = []imapsync.Address{{Name: "Bob", Email: "bob@example.org"}}
	d.To = []imapsync.Address{{Email: annAddr}}
	d.Text = "Hello <b>Ann</b>,\nthe numbers."
	d.HTML = `<img src="https://tracker.example/x.png">`
	d.Headers = []imapsync.Header{{Name: "Subject", Value: "Quarterly <report>"}}
	return d, nil
}

func (fakeMessages) RawMessage(context.Context, int64, int64) (io.ReadCloser, int64, error) {
	return nil, 0, apperr.NotFound("message")
}
func (fakeMessages) SyncNow(context.Context, int64) error { return nil }
func (fakeMessages) Status(context.Context, int64) (imapsync.MailboxStatus, error) {
	return imapsync.MailboxStatus{}, nil
}

func TestMessagePages(t *testing.T) {
	e := newEnv(t, &envOptions{messages: fakeMessages{}})
	imapSrv := e.startIMAP()
	c := e.client("")
	c.signIn(e.annToken)
	resp, _ := c.post("/mailboxes", connectForm(imapSrv.Host(), imapSrv.Port(), annPass))
	path := resp.Header.Get("Location") + "/messages"
	_, body := c.get(path)
	wantContains(t, "the list", body, "Quarterly &lt;report&gt;", "Bob &lt;bob@example.org&gt;", "Numbers inside", `href="`+path+`?cursor=c2"`)
	_, body = c.get(path + "?cursor=c2")
	wantContains(t, "the second page", body, "First page")
	resp, body = c.get(path + "?folder=Nope")
	wantStatus(t, "an unknown folder", resp, body, http.StatusBadRequest)
	_, body = c.get(path + "/7")
	wantContains(t, "the message", body, "Hello &lt;b&gt;Ann&lt;/b&gt;,\nthe numbers.", annAddr)
	wantLacks(t, "the message", body, "tracker.example", "<b>Ann")
	if resp, _ := c.get(path + "/8"); resp.StatusCode != 404 {
		t.Errorf("a missing message = %d", resp.StatusCode)
	}
}
