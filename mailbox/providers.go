package mailbox

// Provider presets: the IMAP and SMTP settings of the mail services users
// connect most often, offered when a mailbox is added, and their lookup by
// email address (GET /api/v1/providers/lookup?email=).
//
// Invariants:
//   - The table is built afresh by every call of Providers: there is no
//     package-level mutable state, and a caller may change what it gets.
//   - A lookup matches the address's domain first, then the domain's MX
//     hosts, most preferred first. The MX lookup is bounded by
//     Lookup.Timeout; a DNS failure or timeout means "no preset", never an
//     error, so the user falls back to entering the settings by hand.
//   - Host names and domains compare without regard to case or a trailing
//     dot.
//
// The settings are the providers' published ones (their help pages and the
// Thunderbird ISPDB). Where a provider documents both 465 (ssl) and 587
// (starttls) for SMTP, the table picks 465 unless the provider recommends
// 587.

import (
	"context"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/outgoing"
)

// Endpoint is one server of a provider.
type Endpoint struct {
	Host     string            `json:"host"`
	Port     int               `json:"port"`
	Security outgoing.Security `json:"security"`
}

// Login forms of Provider.LoginForm.
const (
	// LoginEmail: the login is the full address, name@example.com.
	LoginEmail = "email"
	// LoginLocal: the login is the part before the @.
	LoginLocal = "local"
)

// Provider is a preset: how to reach a mail service over IMAP and SMTP.
type Provider struct {
	// ID is stable and names the preset in requests: "gmail", "yandex",
	// "mailru", "outlook", "yahoo", "icloud", "zoho", "rambler", "gmx",
	// "gmx_de", "fastmail".
	ID   string `json:"id"`
	Name string `json:"name"`
	// Domains are the provider's own address domains, lower case.
	Domains []string `json:"domains"`
	// MXSuffixes are the MX host names (or their parent domains) that mark
	// a domain hosted by the provider (Google Workspace, Yandex 360,
	// Microsoft 365, …). A host matches a suffix when it equals it or ends
	// with "." plus it.
	MXSuffixes []string `json:"-"`
	IMAP       Endpoint `json:"imap"`
	SMTP       Endpoint `json:"smtp"`
	// LoginForm is LoginEmail or LoginLocal, for both IMAP and SMTP.
	LoginForm string `json:"login_form"`
	// FilesSentItself is true when the provider's SMTP server files a copy
	// of each message it sends in the Sent folder, so mailsync must not
	// append another.
	FilesSentItself bool `json:"files_sent_itself"`
	// SentFolder is the Sent folder's name for servers that do not mark it
	// with the \Sent attribute (RFC 6154). It is the decoded UTF-8 form, as
	// go-imap returns names from LIST and encodes them in commands (the
	// modified UTF-7 of RFC 3501 on the wire): Mail.ru's "Отправленные" is
	// "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-" on the wire.
	SentFolder string `json:"sent_folder"`
	// AppPasswordHint is true when the provider wants an app password
	// (not the account password) for IMAP and SMTP, at least once two-step
	// verification is on.
	AppPasswordHint bool `json:"app_password"`
}

// LoginFor returns the login for address in p's login form.
func (p Provider) LoginFor(address string) string {
	if p.LoginForm == LoginLocal {
		if at := strings.LastIndexByte(address, '@'); at > 0 {
			return address[:at]
		}
	}
	return address
}

// Providers returns the presets, in the order they are offered. Each call
// builds a new table.
func Providers() []Provider {
	ssl := outgoing.SecuritySSL
	starttls := outgoing.SecuritySTARTTLS
	return []Provider{
		{
			ID:      "gmail",
			Name:    "Gmail / Google Workspace",
			Domains: []string{"gmail.com", "googlemail.com"},
			// Workspace domains point at aspmx.l.google.com and its
			// alternates, or at smtp.google.com (since 2023).
			MXSuffixes: []string{"aspmx.l.google.com", "google.com", "googlemail.com"},
			IMAP:       Endpoint{"imap.gmail.com", 993, ssl},
			SMTP:       Endpoint{"smtp.gmail.com", 465, ssl},
			LoginForm:  LoginEmail,
			// Gmail files every message sent through smtp.gmail.com.
			FilesSentItself: true,
			// Gmail marks its folders with SPECIAL-USE attributes; the
			// name is localised ("[Gmail]/Отправленные" for a Russian
			// interface, "[Google Mail]/…" in some countries), so this
			// English name is only the last resort.
			SentFolder:      "[Gmail]/Sent Mail",
			AppPasswordHint: true,
		},
		{
			ID:   "yandex",
			Name: "Yandex Mail / Yandex 360",
			Domains: []string{
				"yandex.ru", "ya.ru", "yandex.com", "yandex.by", "yandex.kz", "yandex.ua", "narod.ru",
			},
			// Yandex 360 domains point at mx.yandex.net; yandex.ru itself
			// at mx.yandex.ru.
			MXSuffixes:      []string{"mx.yandex.net", "yandex.net", "yandex.ru"},
			IMAP:            Endpoint{"imap.yandex.ru", 993, ssl},
			SMTP:            Endpoint{"smtp.yandex.ru", 465, ssl},
			LoginForm:       LoginEmail,
			SentFolder:      "Sent",
			AppPasswordHint: true,
		},
		{
			ID:      "mailru",
			Name:    "Mail.ru",
			Domains: []string{"mail.ru", "bk.ru", "inbox.ru", "list.ru", "internet.ru"},
			// mxs.mail.ru, and emx.mail.ru for VK WorkMail domains.
			MXSuffixes:      []string{"mail.ru"},
			IMAP:            Endpoint{"imap.mail.ru", 993, ssl},
			SMTP:            Endpoint{"smtp.mail.ru", 465, ssl},
			LoginForm:       LoginEmail,
			SentFolder:      "Отправленные", // "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-" on the wire
			AppPasswordHint: true,           // "пароль для внешнего приложения"
		},
		{
			ID:   "outlook",
			Name: "Outlook.com / Microsoft 365",
			Domains: []string{
				"outlook.com", "hotmail.com", "live.com", "msn.com", "windowslive.com",
				"hotmail.co.uk", "hotmail.de", "hotmail.fr", "outlook.de", "outlook.fr", "live.ru",
			},
			// Microsoft 365 tenants: <tenant>.mail.protection.outlook.com,
			// or <tenant>.<x>.mx.microsoft since 2024; Outlook.com itself:
			// *.olc.protection.outlook.com.
			MXSuffixes: []string{"mail.protection.outlook.com", "olc.protection.outlook.com", "mx.microsoft"},
			IMAP:       Endpoint{"outlook.office365.com", 993, ssl},
			SMTP:       Endpoint{"smtp.office365.com", 587, starttls},
			LoginForm:  LoginEmail,
			// Exchange Online files messages sent by SMTP AUTH.
			FilesSentItself: true,
			SentFolder:      "Sent Items",
			// Microsoft turned basic authentication off for IMAP in
			// Exchange Online and is doing so for Outlook.com: a password
			// login works only where the tenant or account still allows
			// it, and then with an app password once two-step
			// verification is on. The check shows a refused login.
			AppPasswordHint: true,
		},
		{
			ID:   "yahoo",
			Name: "Yahoo Mail",
			Domains: []string{
				"yahoo.com", "ymail.com", "rocketmail.com",
				"yahoo.co.uk", "yahoo.fr", "yahoo.de", "yahoo.es", "yahoo.it", "yahoo.ca",
			},
			MXSuffixes:      []string{"yahoodns.net"},
			IMAP:            Endpoint{"imap.mail.yahoo.com", 993, ssl},
			SMTP:            Endpoint{"smtp.mail.yahoo.com", 465, ssl},
			LoginForm:       LoginEmail,
			SentFolder:      "Sent",
			AppPasswordHint: true,
		},
		{
			ID:         "icloud",
			Name:       "iCloud Mail",
			Domains:    []string{"icloud.com", "me.com", "mac.com"},
			MXSuffixes: []string{"mail.icloud.com", "icloud.com"},
			IMAP:       Endpoint{"imap.mail.me.com", 993, ssl},
			SMTP:       Endpoint{"smtp.mail.me.com", 587, starttls},
			// Apple documents the full address for SMTP and the local
			// part for IMAP, adding that the full address works for IMAP
			// too: the full address is the one form both accept. (A
			// custom iCloud+ domain logs in with the iCloud address, not
			// the custom one.)
			LoginForm:       LoginEmail,
			SentFolder:      "Sent Messages",
			AppPasswordHint: true,
		},
		{
			ID:      "zoho",
			Name:    "Zoho Mail",
			Domains: []string{"zoho.com", "zohomail.com", "zoho.eu", "zohomail.eu", "zoho.in", "zohomail.in"},
			// mx.zoho.com, mx.zoho.eu, mx.zoho.in, mx.zoho.com.au: the data
			// centre of an organisation's domain. Find adjusts the hosts
			// to the data centre and, for organisation domains found by
			// MX, to Zoho's imappro/smtppro servers.
			MXSuffixes: []string{"zoho.com", "zoho.eu", "zoho.in", "zoho.com.au"},
			IMAP:       Endpoint{"imap.zoho.com", 993, ssl},
			SMTP:       Endpoint{"smtp.zoho.com", 465, ssl},
			LoginForm:  LoginEmail,
			// Zoho files messages sent through its SMTP servers.
			FilesSentItself: true,
			SentFolder:      "Sent",
			// With two-factor authentication on (Zoho's default for new
			// accounts), IMAP and SMTP need an application-specific
			// password.
			AppPasswordHint: true,
		},
		{
			ID:      "rambler",
			Name:    "Rambler Mail",
			Domains: []string{"rambler.ru", "lenta.ru", "ro.ru", "autorambler.ru", "myrambler.ru", "rambler.ua"},
			// mx.rambler.ru
			MXSuffixes: []string{"rambler.ru"},
			IMAP:       Endpoint{"imap.rambler.ru", 993, ssl},
			SMTP:       Endpoint{"smtp.rambler.ru", 465, ssl},
			LoginForm:  LoginEmail,
			// Rambler's own names are DraftBox and SentBox. Access by mail
			// clients must be turned on in the mailbox's settings.
			SentFolder: "SentBox",
		},
		{
			// GMX's international service; gmx.net/gmx.de (gmx_de) is the
			// same company on other servers.
			ID:   "gmx",
			Name: "GMX Mail (gmx.com)",
			Domains: []string{
				"gmx.com", "gmx.us", "gmx.co.uk", "gmx.fr", "gmx.es", "gmx.it", "gmx.ca", "gmx.ru",
			},
			MXSuffixes: []string{"gmx.com"},
			IMAP:       Endpoint{"imap.gmx.com", 993, ssl},
			SMTP:       Endpoint{"mail.gmx.com", 587, starttls},
			LoginForm:  LoginEmail,
			SentFolder: "Sent",
		},
		{
			ID:      "gmx_de",
			Name:    "GMX FreeMail (gmx.net, gmx.de)",
			Domains: []string{"gmx.net", "gmx.de", "gmx.at", "gmx.ch", "gmx.eu"},
			// mx00.emig.gmx.net
			MXSuffixes: []string{"gmx.net"},
			IMAP:       Endpoint{"imap.gmx.net", 993, ssl},
			SMTP:       Endpoint{"mail.gmx.net", 587, starttls},
			LoginForm:  LoginEmail,
			// "POP3 & IMAP Abruf" must be allowed once in the mailbox's
			// settings.
			SentFolder: "Gesendet",
		},
		{
			ID:      "fastmail",
			Name:    "Fastmail",
			Domains: []string{"fastmail.com", "fastmail.fm", "fastmail.net", "fastmail.org", "fastmail.us", "fastmail.to"},
			// in1-smtp.messagingengine.com and in2-smtp…
			MXSuffixes:      []string{"messagingengine.com"},
			IMAP:            Endpoint{"imap.fastmail.com", 993, ssl},
			SMTP:            Endpoint{"smtp.fastmail.com", 465, ssl},
			LoginForm:       LoginEmail,
			SentFolder:      "Sent",
			AppPasswordHint: true,
		},
	}
}

// ProviderByID returns the preset with id (case-insensitive).
func ProviderByID(id string) (Provider, bool) {
	for _, p := range Providers() {
		if strings.EqualFold(p.ID, id) {
			return p, true
		}
	}
	return Provider{}, false
}

// MXResolver looks up MX records; *net.Resolver satisfies it.
type MXResolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
}

// DefaultLookupTimeout bounds the MX lookup when Lookup.Timeout is zero.
const DefaultLookupTimeout = 3 * time.Second

// maxMXHosts bounds how many MX records a lookup considers.
const maxMXHosts = 20

// How Find matched a provider.
const (
	ViaDomain = "domain"
	ViaMX     = "mx"
)

// Lookup finds the preset for an email address. The zero value is usable:
// it asks net.DefaultResolver and waits DefaultLookupTimeout.
type Lookup struct {
	Resolver MXResolver    // nil means net.DefaultResolver
	Timeout  time.Duration // bounds the MX lookup; 0 means DefaultLookupTimeout
}

// Find matches the address's domain against the presets' domains, then the
// domain's MX hosts (most preferred first, bounded by Timeout) against their
// MX suffixes. via is ViaDomain or ViaMX. ok is false, with a nil error,
// when nothing matches, including when DNS fails or times out. A malformed
// address is an *apperr.Error naming the field "email"; when ctx itself is
// done, its error is returned.
func (l *Lookup) Find(ctx context.Context, email string) (p Provider, via string, ok bool, err error) {
	domain, err := emailDomain(email)
	if err != nil {
		return Provider{}, "", false, err
	}
	providers := Providers()
	for _, p := range providers {
		if slices.Contains(p.Domains, domain) {
			return adjustProvider(p, ViaDomain, domain), ViaDomain, true, nil
		}
	}

	timeout := l.Timeout
	if timeout <= 0 {
		timeout = DefaultLookupTimeout
	}
	var resolver MXResolver = net.DefaultResolver
	if l.Resolver != nil {
		resolver = l.Resolver
	}
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	mxs, lookupErr := resolver.LookupMX(lctx, domain)
	if ctx.Err() != nil {
		return Provider{}, "", false, ctx.Err()
	}
	if lookupErr != nil && len(mxs) == 0 {
		// NXDOMAIN, no MX, a DNS failure or the timeout: no preset.
		return Provider{}, "", false, nil
	}

	hosts := mxHosts(mxs)
	for _, host := range hosts {
		for _, p := range providers {
			for _, suffix := range p.MXSuffixes {
				if host == suffix || strings.HasSuffix(host, "."+suffix) {
					return adjustProvider(p, ViaMX, host), ViaMX, true, nil
				}
			}
		}
	}
	return Provider{}, "", false, nil
}

// mxHosts returns the MX host names, most preferred first (ties keep the
// resolver's order), lower case and without the trailing dot, skipping the
// null MX "." of RFC 7505; at most maxMXHosts of them.
func mxHosts(mxs []*net.MX) []string {
	sorted := slices.Clone(mxs)
	sorted = slices.DeleteFunc(sorted, func(mx *net.MX) bool { return mx == nil })
	slices.SortStableFunc(sorted, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	var hosts []string
	for _, mx := range sorted {
		h := normalizeDomain(mx.Host)
		if h == "" {
			continue
		}
		hosts = append(hosts, h)
		if len(hosts) == maxMXHosts {
			break
		}
	}
	return hosts
}

// adjustProvider tailors a preset to how it was found. Zoho serves each
// data centre from its own hosts (zoho.com, zoho.eu, zoho.in,
// zoho.com.au), and organisation domains, the ones found by MX, from
// imappro/smtppro instead of imap/smtp. matched is the domain or MX host
// that matched.
func adjustProvider(p Provider, via, matched string) Provider {
	if p.ID != "zoho" {
		return p
	}
	region := "com"
	for _, r := range []string{"com.au", "eu", "in"} {
		if strings.HasSuffix(matched, "zoho."+r) || strings.HasSuffix(matched, "zohomail."+r) {
			region = r
			break
		}
	}
	pro := ""
	if via == ViaMX {
		pro = "pro"
	}
	p.IMAP.Host = "imap" + pro + ".zoho." + region
	p.SMTP.Host = "smtp" + pro + ".zoho." + region
	return p
}

// maxEmailLen is the longest address Find accepts (RFC 5321's path limit).
const maxEmailLen = 254

// emailDomain returns the lower-case domain of an address, or an
// *apperr.Error for the field "email".
func emailDomain(email string) (string, error) {
	invalid := func() error {
		return apperr.Invalid("email", "invalid_email", "enter an email address such as name@example.com")
	}
	email = strings.TrimSpace(email)
	at := strings.LastIndexByte(email, '@')
	if email == "" || len(email) > maxEmailLen || at <= 0 || at == len(email)-1 {
		return "", invalid()
	}
	for _, r := range email {
		if r <= ' ' || r == 0x7f || r == '<' || r == '>' || r == ',' || r == ';' {
			return "", invalid()
		}
	}
	domain := normalizeDomain(email[at+1:])
	if !validDomain(domain) {
		return "", invalid()
	}
	return domain, nil
}

// normalizeDomain lower-cases a name and drops one trailing dot.
func normalizeDomain(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// validDomain reports whether d is a DNS name of at least two labels of
// letters, digits and hyphens. Non-ASCII letters are let through: such a
// name matches no preset and its MX lookup fails, which is "no preset",
// not a malformed address.
func validDomain(d string) bool {
	if len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c >= 0x80) {
				return false
			}
		}
	}
	return true
}
