package web

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/mailsync/mailsync/internal/i18n"
	"github.com/mailsync/mailsync/internal/testpeer"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
)

// The browser tests drive Debian's chromium headless through the pages, in
// English and in Russian, against the real services, a real Dovecot and an
// SMTP peer over STARTTLS. They write a screenshot of every page to
// MAILSYNC_SCREENSHOTS (default: $TMPDIR/mailsync-screenshots) and fail if
// the browser asks anything of another origin.

// screenshotDir is where the screenshots go.
func screenshotDir() string {
	if d := os.Getenv("MAILSYNC_SCREENSHOTS"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "mailsync-screenshots")
}

func chromiumPath() string {
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

func TestBrowser(t *testing.T) {
	bin := chromiumPath()
	if bin == "" {
		testpeer.Missing(t, "chromium", "no chromium on PATH (apt-get install chromium)")
		return
	}
	dir := screenshotDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, lang := range []i18n.Lang{i18n.En, i18n.Ru} {
		t.Run(string(lang), func(t *testing.T) {
			browserScenario(t, bin, lang, dir, &files)
		})
	}
	slices.Sort(files)
	t.Logf("%d screenshots in %s:\n  %s", len(files), dir, strings.Join(files, "\n  "))
}

// tab is one browser tab on the test server.
type tab struct {
	t     *testing.T
	ctx   context.Context
	base  string
	lang  i18n.Lang
	dir   string
	n     int
	shots *[]string // every file written, across languages
}

// do runs steps, each bounded, and fails the test on an error.
func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v (at %s)", what, err, b.location())
	}
}

func (b *tab) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	return loc
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v (at %s)", sel, err, b.location())
	}
	return s
}

func (b *tab) eval(js string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return s
}

// open navigates to a path and waits for the page's heading.
func (b *tab) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
}

// shot writes a full-page screenshot named after the page.
func (b *tab) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	b.n++
	file := fmt.Sprintf("%s-%02d-%s.png", b.lang, b.n, name)
	if err := os.WriteFile(filepath.Join(b.dir, file), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	*b.shots = append(*b.shots, file)
}

// tr is the catalogue text the page should show.
func (b *tab) tr(key string, args ...any) string { return i18n.T(b.lang, "web."+key, args...) }

func (b *tab) wantText(sel string, subs ...string) {
	b.t.Helper()
	got := b.text(sel)
	for _, s := range subs {
		if !strings.Contains(got, s) {
			b.t.Errorf("%s says %q; want it to contain %q", sel, got, s)
		}
	}
}

func (b *tab) set(id, value string) chromedp.Action[chromedp.Void] {
	return chromedp.SetValue(chromedp.ID(id), value)
}

func browserScenario(t *testing.T, bin string, lang i18n.Lang, dir string, shots *[]string) {
	e := newEnv(t, &envOptions{sync: true})
	dove := testpeer.StartDovecot(t, &testpeer.DovecotOptions{CA: e.ca})
	if dove == nil {
		return
	}
	dove.AddUser(t, annAddr, annPass)
	dove.Deliver(t, annAddr, "INBOX", []byte("From: Bob <bob@example.org>\r\nTo: "+annAddr+"\r\nSubject: Quarterly report\r\n"+
		"Date: Fri, 27 Nov 2026 09:00:00 +0000\r\nMessage-ID: <q1@example.org>\r\n\r\nHello Ann,\r\nthe numbers are in.\r\n"))

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("lang", string(lang)), // the browser's own UI (date fields) in the page's language
	)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)

	// Every request the page makes, to check that none leaves the origin.
	var (
		reqMu sync.Mutex
		reqs  []string
	)
	if err := chromedp.Listen(ctx, func(ev any) {
		if r, ok := ev.(*network.EventRequestWillBeSent); ok {
			reqMu.Lock()
			reqs = append(reqs, r.Request.URL)
			reqMu.Unlock()
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	accept := "en-US,en;q=0.9"
	if lang == i18n.Ru {
		accept = "ru-RU,ru;q=0.9,en;q=0.5"
	}
	if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Accept-Language": accept}}); err != nil {
		t.Fatal(err)
	}
	b := &tab{t: t, ctx: ctx, base: e.srv.URL, lang: lang, dir: dir, shots: shots}
	c := outgoing.Caller{UserID: e.annID, Lang: string(lang)}

	// Sign-in page: the language from Accept-Language; the keyboard reaches
	// the skip link first, and its focus is visible.
	b.open("/signin")
	if got := b.eval(`document.documentElement.lang`); got != string(lang) {
		t.Errorf("the sign-in page's language = %q, want %q", got, lang)
	}
	b.do("tab to the skip link", chromedp.KeyEvent("\t"))
	if got := b.eval(`document.activeElement.className + ' ' + getComputedStyle(document.activeElement).outlineStyle`); got != "skip solid" {
		t.Errorf("after Tab the focus is on %q, want the skip link with a solid outline", got)
	}
	b.shot("signin")

	// The admin adds an SMTP account: a wrong password shows the error with
	// its step and saves nothing; the right one makes the row appear.
	b.do("sign in as admin", b.set("f-token", e.adminToken), chromedp.Click(chromedp.CSS("#signin-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("connect-mailbox")))
	b.open("/accounts")
	b.shot("accounts-empty")
	b.do("open the account form", chromedp.Click(chromedp.ID("add-account")), chromedp.WaitVisible(chromedp.ID("account-form")))
	b.do("fill in the account",
		b.set("f-sender-name", "Portal"), b.set("f-email", siteAddr), b.set("f-host", "localhost"),
		b.set("f-port", strconv.Itoa(e.smtp.Port())), b.set("f-security", "starttls"), b.set("f-auth", "login"),
		b.set("f-login", siteAddr), b.set("f-password", "wrong-Pa55"))
	b.shot("account-form")
	b.do("save with a wrong password", chromedp.Click(chromedp.ID("save")), chromedp.WaitVisible(chromedp.CSS(".report.fail")))
	b.wantText(".report.fail", b.tr("step.auth"))
	b.wantText("#error-summary", b.tr("check.failed_nothing_saved", b.tr("step.auth")))
	if as, _ := e.out.ListAccounts(context.Background()); len(as) != 0 {
		t.Fatalf("a refused account was saved")
	}
	if v := b.eval(`document.getElementById('f-password').value`); v != "" {
		t.Errorf("the password came back into the form: %q", v)
	}
	b.shot("account-refused")
	b.do("save with the right password", b.set("f-password", sitePass), chromedp.Click(chromedp.ID("save")),
		chromedp.WaitVisible(chromedp.ID("accounts")))
	b.wantText("#accounts tbody", siteAddr, "Portal", "localhost", b.tr("check.success"))
	b.shot("accounts")
	b.do("open the account", chromedp.Click(chromedp.CSS("#accounts tbody a")), chromedp.WaitVisible(chromedp.ID("account-form")))
	b.shot("account-edit")
	b.open("/users")
	b.shot("users")
	b.do("open a user", chromedp.Click(chromedp.CSS("#users tbody a")), chromedp.WaitVisible(chromedp.ID("token-form")))
	b.shot("user")
	b.do("sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("signin-form")))

	// The user connects a Dovecot mailbox.
	b.do("sign in as ann", b.set("f-token", e.annToken), chromedp.Click(chromedp.CSS("#signin-form button[type=submit]")),
		chromedp.WaitVisible(chromedp.ID("connect-mailbox")))
	b.shot("mailboxes-empty")
	b.do("open the connect form", chromedp.Click(chromedp.ID("connect-mailbox")), chromedp.WaitVisible(chromedp.ID("connect-form")))
	// A preset fills its fields in.
	yandex, _ := mailbox.ProviderByID("yandex")
	b.do("choose a preset", b.set("f-email", annAddr), b.set("f-provider", "yandex"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('f-provider').dispatchEvent(new Event('change'))`))
	if got := b.eval(`document.getElementById('f-imap-host').value + ':' + document.getElementById('f-imap-port').value`); got != yandex.IMAP.Host+":"+strconv.Itoa(yandex.IMAP.Port) {
		t.Errorf("the preset filled in %q", got)
	}
	b.shot("mailbox-connect-preset")
	b.do("enter the IMAP settings", b.set("f-provider", ""),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('f-provider').dispatchEvent(new Event('change'))`),
		b.set("f-name", "Ann Example"), b.set("f-password", "wrong-Pa55"),
		b.set("f-imap-host", dove.Host()), b.set("f-imap-port", strconv.Itoa(dove.TLSPort())), b.set("f-imap-security", "ssl"),
		b.set("f-imap-login", annAddr))
	b.do("connect with a wrong password", chromedp.Click(chromedp.ID("connect")), chromedp.WaitVisible(chromedp.CSS(".report.fail")))
	b.wantText(".report.fail", b.tr("step.login"))
	b.shot("mailbox-connect-refused")
	b.do("connect", b.set("f-password", annPass), chromedp.Click(chromedp.ID("connect")),
		chromedp.WaitVisible(chromedp.ID("outgoing-form")))
	b.wantText("main .flash", b.tr("mailboxes.connected", annAddr))
	b.shot("mailbox-settings")
	mbs, _ := e.mbs.List(context.Background(), c)
	if len(mbs) != 1 {
		t.Fatalf("mailboxes after connect: %v", mbs)
	}
	mbPath := "/mailboxes/" + strconv.FormatInt(mbs[0].ID, 10)

	// It turns on external SMTP: Check shows the green status, saving keeps
	// it, and the settings view checks it again on open.
	b.do("fill in the outgoing block", chromedp.Click(chromedp.ID("f-enabled")),
		b.set("f-smtp-host", "localhost"), b.set("f-smtp-port", strconv.Itoa(e.smtp.Port())), b.set("f-smtp-security", "starttls"),
		b.set("f-smtp-auth", "login"), b.set("f-smtp-login", annAddr), b.set("f-smtp-password", annPass))
	b.do("check", chromedp.Click(chromedp.ID("check")), chromedp.WaitVisible(chromedp.CSS("#check-result .report.ok")))
	b.wantText("#check-result", b.tr("check.ok"))
	b.shot("mailbox-check")
	b.do("save the outgoing block", chromedp.Click(chromedp.ID("outgoing-save")), chromedp.WaitVisible(chromedp.CSS("#out-status.ok")))
	b.wantText("#out-status", i18n.T(lang, "mailbox.outgoing_ok"))
	b.shot("mailbox-status-ok")

	// Folders, and the messages the sync engine brought in.
	b.do("open the folders", chromedp.Click(chromedp.ID("folders-link")), chromedp.WaitVisible(chromedp.ID("folders-form")))
	b.shot("folders")
	if _, err := e.sync.SyncOnce(context.Background(), mbs[0].ID); err != nil {
		t.Fatalf("SyncOnce() = %v", err)
	}
	b.open(mbPath + "/messages")
	b.wantText("#messages", "Quarterly report", "bob@example.org")
	b.shot("messages")
	b.do("open the message", chromedp.Click(chromedp.CSS("#messages tbody a")), chromedp.WaitVisible(chromedp.CSS("article.message")))
	b.wantText("article.message", "the numbers are in.")
	b.shot("message")
	b.open("/mailboxes")
	b.wantText("#mailboxes", annAddr)
	b.shot("mailboxes")

	// The sender is on the senders page, managed by the mailbox.
	b.open("/senders")
	sel := `tr[data-sender="` + annAddr + `"]`
	b.do("find the sender", chromedp.WaitVisible(chromedp.CSS(sel)))
	b.wantText(sel, b.tr("kind.mailbox"), b.tr("why.sender_managed_by_mailbox"))
	b.shot("senders")
	b.open("/senders/smtp")
	b.shot("sender-smtp")
	b.open("/senders/confirm")
	b.shot("sender-confirm")
	b.do("ask for a code", b.set("f-email", "sales@example.org"), chromedp.Click(chromedp.ID("send-code")),
		chromedp.WaitVisible(chromedp.ID("code-form")))
	b.shot("sender-code")

	// A message sent as the mailbox shows in the send log.
	b.open("/compose")
	senderID := b.eval(`[...document.querySelectorAll('#f-sender-id option')].find(o => o.textContent.includes('` + annAddr + `')).value`)
	b.do("write", b.set("f-sender-id", senderID), b.set("f-to", "client@example.org"), b.set("f-subject", "Offer for testdeal"),
		b.set("f-text", "Hello!"), b.set("f-crm-type", "deal"), b.set("f-crm-id", "testdeal"))
	b.shot("compose")
	b.do("send", chromedp.Click(chromedp.ID("send")), chromedp.WaitVisible(chromedp.ID("log-filters")))
	e.send()
	b.open("/log")
	b.wantText("#sendlog", "Offer for testdeal", "client@example.org", b.tr("logstatus.sent"))
	b.shot("sendlog")

	// Turning external SMTP off removes the sender.
	b.open(mbPath)
	b.do("turn external SMTP off", chromedp.Click(chromedp.ID("f-enabled")), chromedp.Click(chromedp.ID("outgoing-save")),
		chromedp.WaitVisible(chromedp.CSS("main .flash")))
	b.wantText("main .flash", b.tr("mailboxes.outgoing_saved"))
	b.open("/senders")
	if b.eval(`String(document.querySelector('`+sel+`') === null)`) != "true" {
		t.Errorf("the mailbox's sender is still listed after turning external SMTP off")
	}
	b.shot("senders-after-off")
	b.open("/no/such/page")
	b.shot("not-found")

	// The switch changes the language.
	other := "ru"
	if lang == i18n.Ru {
		other = "en"
	}
	b.do("switch the language", chromedp.Click(chromedp.ID("lang-switch")),
		chromedp.WaitVisible(chromedp.CSS(`html[lang="`+other+`"] main h1`)))

	// Nothing came from another origin.
	reqMu.Lock()
	defer reqMu.Unlock()
	origin, _ := url.Parse(e.srv.URL)
	sawCSS := false
	for _, r := range reqs {
		u, err := url.Parse(r)
		if err == nil && u.Scheme == "data" {
			continue // inline, no network: the browser's own date-picker icon
		}
		if err != nil || u.Scheme+"://"+u.Host != origin.Scheme+"://"+origin.Host {
			t.Errorf("the page asked another origin: %s", r)
		}
		if strings.HasPrefix(u.Path, "/static/app.css") {
			sawCSS = true
		}
	}
	if len(reqs) < 30 || !sawCSS {
		t.Errorf("the network log has %d requests (stylesheet seen: %v): is the listener working?", len(reqs), sawCSS)
	}
}
