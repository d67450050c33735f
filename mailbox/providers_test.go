package mailbox

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/outgoing"
)

// fakeMX answers MX lookups from a table; a name it does not know does not
// exist.
type fakeMX struct {
	records map[string][]*net.MX
	calls   atomic.Int32
}

func (f *fakeMX) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	f.calls.Add(1)
	if mx, ok := f.records[name]; ok {
		return mx, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// stalledMX blocks every lookup until its context is done.
type stalledMX struct{}

func (stalledMX) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	<-ctx.Done()
	return nil, &net.DNSError{Err: ctx.Err().Error(), Name: name, IsTimeout: true}
}

// failingMX fails the test if it is asked at all.
type failingMX struct{ t *testing.T }

func (f failingMX) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	f.t.Errorf("LookupMX(%q) called, want a match by domain without DNS", name)
	return nil, errors.New("unexpected lookup")
}

func TestProviderSettings(t *testing.T) {
	ssl, starttls := outgoing.SecuritySSL, outgoing.SecuritySTARTTLS
	cases := []struct {
		id          string
		imap, smtp  Endpoint
		filesSent   bool
		appPassword bool
	}{
		{"gmail", Endpoint{"imap.gmail.com", 993, ssl}, Endpoint{"smtp.gmail.com", 465, ssl}, true, true},
		{"yandex", Endpoint{"imap.yandex.ru", 993, ssl}, Endpoint{"smtp.yandex.ru", 465, ssl}, false, true},
		{"mailru", Endpoint{"imap.mail.ru", 993, ssl}, Endpoint{"smtp.mail.ru", 465, ssl}, false, true},
		{"outlook", Endpoint{"outlook.office365.com", 993, ssl}, Endpoint{"smtp.office365.com", 587, starttls}, true, true},
		{"yahoo", Endpoint{"imap.mail.yahoo.com", 993, ssl}, Endpoint{"smtp.mail.yahoo.com", 465, ssl}, false, true},
		{"icloud", Endpoint{"imap.mail.me.com", 993, ssl}, Endpoint{"smtp.mail.me.com", 587, starttls}, false, true},
		{"zoho", Endpoint{"imap.zoho.com", 993, ssl}, Endpoint{"smtp.zoho.com", 465, ssl}, true, true},
		{"rambler", Endpoint{"imap.rambler.ru", 993, ssl}, Endpoint{"smtp.rambler.ru", 465, ssl}, false, false},
		{"gmx", Endpoint{"imap.gmx.com", 993, ssl}, Endpoint{"mail.gmx.com", 587, starttls}, false, false},
		{"gmx_de", Endpoint{"imap.gmx.net", 993, ssl}, Endpoint{"mail.gmx.net", 587, starttls}, false, false},
		{"fastmail", Endpoint{"imap.fastmail.com", 993, ssl}, Endpoint{"smtp.fastmail.com", 465, ssl}, false, true},
	}
	if got, want := len(Providers()), len(cases); got != want {
		t.Errorf("len(Providers()) = %d, want %d", got, want)
	}
	for _, c := range cases {
		p, ok := ProviderByID(c.id)
		if !ok {
			t.Errorf("ProviderByID(%q) ok = false, want true", c.id)
			continue
		}
		if p.IMAP != c.imap {
			t.Errorf("ProviderByID(%q).IMAP = %+v, want %+v", c.id, p.IMAP, c.imap)
		}
		if p.SMTP != c.smtp {
			t.Errorf("ProviderByID(%q).SMTP = %+v, want %+v", c.id, p.SMTP, c.smtp)
		}
		if p.FilesSentItself != c.filesSent {
			t.Errorf("ProviderByID(%q).FilesSentItself = %v, want %v", c.id, p.FilesSentItself, c.filesSent)
		}
		if p.AppPasswordHint != c.appPassword {
			t.Errorf("ProviderByID(%q).AppPasswordHint = %v, want %v", c.id, p.AppPasswordHint, c.appPassword)
		}
	}
	if _, ok := ProviderByID("nosuch"); ok {
		t.Errorf("ProviderByID(%q) ok = true, want false", "nosuch")
	}
	if p, ok := ProviderByID("GMail"); !ok || p.ID != "gmail" {
		t.Errorf("ProviderByID(%q) = %q, %v, want %q, true", "GMail", p.ID, ok, "gmail")
	}
}

func TestProvidersTableIsConsistent(t *testing.T) {
	ids := map[string]bool{}
	domains := map[string]string{}
	for _, p := range Providers() {
		if p.ID == "" || p.Name == "" || ids[p.ID] {
			t.Errorf("provider %q: empty or duplicate id or name", p.ID)
		}
		ids[p.ID] = true
		if len(p.Domains) == 0 || len(p.MXSuffixes) == 0 {
			t.Errorf("provider %q: no domains or MX suffixes", p.ID)
		}
		for _, d := range p.Domains {
			if d != strings.ToLower(d) || !validDomain(d) {
				t.Errorf("provider %q: domain %q is not a lower-case DNS name", p.ID, d)
			}
			if other, dup := domains[d]; dup {
				t.Errorf("domain %q is in both %q and %q", d, other, p.ID)
			}
			domains[d] = p.ID
		}
		for _, e := range []Endpoint{p.IMAP, p.SMTP} {
			s := IMAPSettings{Host: e.Host, Port: e.Port, Security: e.Security, Login: "x@example.com", Password: "x"}
			if err := s.Validate(""); err != nil {
				t.Errorf("provider %q: endpoint %+v: %v", p.ID, e, err)
			}
		}
		if p.LoginForm != LoginEmail && p.LoginForm != LoginLocal {
			t.Errorf("provider %q: LoginForm = %q, want %q or %q", p.ID, p.LoginForm, LoginEmail, LoginLocal)
		}
		if p.SentFolder == "" {
			t.Errorf("provider %q: no SentFolder", p.ID)
		}
	}
}

func TestProvidersReturnsFreshValues(t *testing.T) {
	a := Providers()
	a[0].Domains[0] = "changed.example"
	a[0].IMAP.Host = "changed.example"
	b := Providers()
	if b[0].Domains[0] == "changed.example" || b[0].IMAP.Host == "changed.example" {
		t.Errorf("Providers() after changing an earlier result = %+v, want the original table", b[0])
	}
}

// TestFindByDomain runs one lookup per preset domain: each matches its
// preset by domain, without DNS.
func TestFindByDomain(t *testing.T) {
	for _, want := range Providers() {
		for _, d := range want.Domains {
			t.Run(d, func(t *testing.T) {
				l := &Lookup{Resolver: failingMX{t}}
				p, via, ok, err := l.Find(context.Background(), "someone@"+d)
				if err != nil || !ok {
					t.Fatalf("Find(%q) ok, err = %v, %v, want true, nil", "someone@"+d, ok, err)
				}
				if p.ID != want.ID || via != ViaDomain {
					t.Errorf("Find(%q) = %q via %q, want %q via %q", "someone@"+d, p.ID, via, want.ID, ViaDomain)
				}
			})
		}
	}
}

func TestFind(t *testing.T) {
	mx := func(pairs ...any) []*net.MX {
		var out []*net.MX
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, &net.MX{Host: pairs[i].(string), Pref: uint16(pairs[i+1].(int))})
		}
		return out
	}
	resolver := &fakeMX{records: map[string][]*net.MX{
		"corp.example":      mx("aspmx.l.google.com.", 1, "alt1.aspmx.l.google.com.", 5),
		"workspace.example": mx("smtp.google.com.", 1),
		"y360.example":      mx("mx.yandex.net.", 10),
		"m365.example":      mx("corp-example.mail.protection.outlook.com.", 0),
		"m365new.example":   mx("corp-example.r-v1.mx.microsoft.", 0),
		"upper.example":     mx("ASPMX.L.GOOGLE.COM.", 1),
		"nodot.example":     mx("mx.yandex.net", 10),
		"vk.example":        mx("emx.mail.ru.", 10),
		"fm.example":        mx("in1-smtp.messagingengine.com.", 10, "in2-smtp.messagingengine.com.", 20),
		"icloud.example":    mx("mx01.mail.icloud.com.", 10),
		"zoho.example":      mx("mx.zoho.com.", 10),
		"zohoeu.example":    mx("mx.zoho.eu.", 10, "mx2.zoho.eu.", 20),
		"yahoo.example":     mx("mta5.am0.yahoodns.net.", 1),
		"rambler.example":   mx("mx.rambler.ru.", 10),
		"gmxnet.example":    mx("mx00.emig.gmx.net.", 10),
		// The most preferred MX decides, whatever the order of records.
		"order.example": mx("mx.yandex.net.", 20, "aspmx.l.google.com.", 10),
		// A backup MX at another provider still matches when the primary
		// is unknown.
		"backup.example": mx("mx.own.example.", 10, "mx.yandex.net.", 20),
		"own.example":    mx("mx.own.example.", 10),
		// Suffixes match whole labels only.
		"lookalike.example": mx("mx.notgoogle.com.", 10, "evilmail.ru.", 20),
		"nullmx.example":    mx(".", 0),
		"nil.example":       {nil, {Host: "mx.yandex.net.", Pref: 10}},
	}}
	cases := []struct {
		email    string
		wantID   string // "" = no match
		wantVia  string
		wantIMAP string
		wantSMTP string
	}{
		{"a@corp.example", "gmail", ViaMX, "imap.gmail.com", "smtp.gmail.com"},
		{"a@workspace.example", "gmail", ViaMX, "", ""},
		{"a@y360.example", "yandex", ViaMX, "imap.yandex.ru", ""},
		{"a@m365.example", "outlook", ViaMX, "outlook.office365.com", "smtp.office365.com"},
		{"a@m365new.example", "outlook", ViaMX, "", ""},
		{"a@upper.example", "gmail", ViaMX, "", ""},
		{"a@nodot.example", "yandex", ViaMX, "", ""},
		{"a@vk.example", "mailru", ViaMX, "", ""},
		{"a@fm.example", "fastmail", ViaMX, "", ""},
		{"a@icloud.example", "icloud", ViaMX, "", ""},
		{"a@zoho.example", "zoho", ViaMX, "imappro.zoho.com", "smtppro.zoho.com"},
		{"a@zohoeu.example", "zoho", ViaMX, "imappro.zoho.eu", "smtppro.zoho.eu"},
		{"a@zoho.eu", "zoho", ViaDomain, "imap.zoho.eu", "smtp.zoho.eu"},
		{"a@zoho.com", "zoho", ViaDomain, "imap.zoho.com", "smtp.zoho.com"},
		{"a@yahoo.example", "yahoo", ViaMX, "", ""},
		{"a@rambler.example", "rambler", ViaMX, "", ""},
		{"a@gmxnet.example", "gmx_de", ViaMX, "imap.gmx.net", ""},
		{"a@order.example", "gmail", ViaMX, "", ""},
		{"a@backup.example", "yandex", ViaMX, "", ""},
		{"a@own.example", "", "", "", ""},
		{"a@lookalike.example", "", "", "", ""},
		{"a@nullmx.example", "", "", "", ""},
		{"a@nil.example", "yandex", ViaMX, "", ""},
		{"a@unknown.example", "", "", "", ""},
		// Case and surrounding space do not matter; a trailing dot neither.
		{"  Someone@GMail.COM ", "gmail", ViaDomain, "", ""},
		{"someone@Yandex.RU.", "yandex", ViaDomain, "", ""},
		{"a@CORP.example", "gmail", ViaMX, "", ""},
		// An international domain is no preset, not a malformed address.
		{"a@почта.рф", "", "", "", ""},
		// The last @ separates the domain.
		{`"a@b"@mail.ru`, "mailru", ViaDomain, "", ""},
	}
	for _, c := range cases {
		l := &Lookup{Resolver: resolver, Timeout: time.Second}
		p, via, ok, err := l.Find(context.Background(), c.email)
		if err != nil {
			t.Errorf("Find(%q) error = %v, want nil", c.email, err)
			continue
		}
		if c.wantID == "" {
			if ok {
				t.Errorf("Find(%q) = %q via %q, want no match", c.email, p.ID, via)
			}
			continue
		}
		if !ok || p.ID != c.wantID || via != c.wantVia {
			t.Errorf("Find(%q) = %q via %q (ok %v), want %q via %q", c.email, p.ID, via, ok, c.wantID, c.wantVia)
			continue
		}
		if c.wantIMAP != "" && p.IMAP.Host != c.wantIMAP {
			t.Errorf("Find(%q).IMAP.Host = %q, want %q", c.email, p.IMAP.Host, c.wantIMAP)
		}
		if c.wantSMTP != "" && p.SMTP.Host != c.wantSMTP {
			t.Errorf("Find(%q).SMTP.Host = %q, want %q", c.email, p.SMTP.Host, c.wantSMTP)
		}
	}
	// The lookup asks for the lower-case domain without the trailing dot.
	if _, _, ok, _ := (&Lookup{Resolver: resolver}).Find(context.Background(), "a@CORP.Example."); !ok {
		t.Errorf("Find(%q) ok = false, want true", "a@CORP.Example.")
	}
}

func TestFindMalformed(t *testing.T) {
	for _, email := range []string{
		"", "   ", "someone", "@gmail.com", "someone@", "some one@gmail.com", "someone@gmail",
		"someone@-gmail.com", "someone@gmail..com", "someone@gm_ail.com", "a@b@",
		"someone@gmail.com\r\nBcc: x@y.z", "<someone@gmail.com>",
		"a@" + strings.Repeat("x", 250) + ".com",
	} {
		l := &Lookup{Resolver: failingMX{t}}
		_, _, ok, err := l.Find(context.Background(), email)
		e, isApp := apperr.As(err)
		if ok || !isApp || e.Field != "email" || !errors.Is(err, apperr.ErrInvalid) {
			t.Errorf("Find(%q) = ok %v, err %v, want an invalid-input *apperr.Error for field %q", email, ok, err, "email")
		}
	}
}

func TestFindStalledResolverRespectsTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	l := &Lookup{Resolver: stalledMX{}, Timeout: timeout}
	start := time.Now()
	_, _, ok, err := l.Find(context.Background(), "a@stalled.example")
	elapsed := time.Since(start)
	if ok || err != nil {
		t.Errorf("Find() with a stalled resolver = ok %v, err %v, want false, nil", ok, err)
	}
	if elapsed < timeout || elapsed > timeout+time.Second {
		t.Errorf("Find() with a stalled resolver took %v, want about %v", elapsed, timeout)
	}
}

func TestFindDefaultTimeout(t *testing.T) {
	// With Timeout zero the lookup still ends: the caller's shorter
	// deadline wins and is reported as the caller's error.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, ok, err := (&Lookup{Resolver: stalledMX{}}).Find(ctx, "a@stalled.example")
	if ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Find() with a done context = ok %v, err %v, want false, %v", ok, err, context.DeadlineExceeded)
	}
}

func TestFindCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, ok, err := (&Lookup{Resolver: stalledMX{}, Timeout: time.Minute}).Find(ctx, "a@stalled.example")
	if ok || !errors.Is(err, context.Canceled) {
		t.Errorf("Find() with a cancelled context = ok %v, err %v, want false, %v", ok, err, context.Canceled)
	}
	// A match by domain needs no DNS, so a cancelled context does not
	// matter.
	if p, _, ok, err := (&Lookup{Resolver: failingMX{t}}).Find(ctx, "a@mail.ru"); !ok || err != nil || p.ID != "mailru" {
		t.Errorf("Find(%q) with a cancelled context = %q, %v, %v, want %q, true, nil", "a@mail.ru", p.ID, ok, err, "mailru")
	}
}

func TestMXHostsBounded(t *testing.T) {
	var many []*net.MX
	for i := range 100 {
		many = append(many, &net.MX{Host: "mx.example.", Pref: uint16(100 - i)})
	}
	if got := mxHosts(many); len(got) != maxMXHosts {
		t.Errorf("len(mxHosts(100 records)) = %d, want %d", len(got), maxMXHosts)
	}
}

func TestLoginFor(t *testing.T) {
	cases := []struct {
		form, address, want string
	}{
		{LoginEmail, "user@example.com", "user@example.com"},
		{LoginLocal, "user@example.com", "user"},
		{LoginLocal, "noat", "noat"},
	}
	for _, c := range cases {
		if got := (Provider{LoginForm: c.form}).LoginFor(c.address); got != c.want {
			t.Errorf("Provider{LoginForm: %q}.LoginFor(%q) = %q, want %q", c.form, c.address, got, c.want)
		}
	}
	if !slices.ContainsFunc(Providers(), func(p Provider) bool { return p.LoginForm == LoginEmail }) {
		t.Errorf("no preset uses the full address as login")
	}
}
