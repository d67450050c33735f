package outgoing

import (
	"github.com/mailsync/mailsync/internal/netguard"
	"strings"
	"unicode/utf8"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
)

// Security is how a connection to an SMTP server is protected.
type Security string

const (
	// SecuritySSL is implicit TLS from the first byte (RFC 8314), usually
	// port 465.
	SecuritySSL Security = "ssl"
	// SecuritySTARTTLS greets in clear text and upgrades with STARTTLS
	// (RFC 3207), usually port 587. It is required: a server that does not
	// offer STARTTLS is refused, never used in clear text.
	SecuritySTARTTLS Security = "starttls"
	// SecurityNone is clear text, for a trusted relay inside the network.
	SecurityNone Security = "none"
)

// AuthMethod is whether mailsync logs in to the SMTP server.
type AuthMethod string

const (
	// AuthLogin logs in with a login and password (SASL PLAIN or LOGIN).
	AuthLogin AuthMethod = "login"
	// AuthNone sends without logging in, as to a relay that trusts the
	// network.
	AuthNone AuthMethod = "none"
)

// Settings are how to reach and log in to one SMTP server.
type Settings struct {
	Host     string
	Port     int
	Security Security
	Auth     AuthMethod
	Login    string
	Password secret.Secret
}

// Limits of the settings' text fields.
const (
	maxHostLen  = 253 // RFC 1035 name length without the trailing dot
	maxLoginLen = 320 // an email address at its longest
	maxPassLen  = 1024
)

// Validate returns nil or an *apperr.Error of kind apperr.ErrInvalid whose
// Field is prefix plus the field at fault ("host", "port", "security",
// "auth", "login", "password"); prefix is "" or, say, "smtp.". With auth
// login, a login and a password are required.
func (s Settings) Validate(prefix string) error {
	return s.validate(prefix, false)
}

// ValidateKeepingPassword is Validate for an update that keeps the stored
// password: with auth login, an empty Password is accepted (the caller fills
// it in from storage before dialling).
func (s Settings) ValidateKeepingPassword(prefix string) error {
	return s.validate(prefix, true)
}

func (s Settings) validate(prefix string, keepPassword bool) error {
	if code, msg := netguard.CheckHostSyntax(s.Host, "SMTP"); code != "" {
		return apperr.Invalid(prefix+"host", code, "%s", msg)
	}
	if s.Port < 1 || s.Port > 65535 {
		return apperr.Invalid(prefix+"port", "invalid_port", "the port must be a number from 1 to 65535 (usually 465 for ssl, 587 for starttls)")
	}
	switch s.Security {
	case SecuritySSL, SecuritySTARTTLS, SecurityNone:
	default:
		return apperr.Invalid(prefix+"security", "invalid_choice", "security must be ssl, starttls or none")
	}
	switch s.Auth {
	case AuthNone:
		return nil
	case AuthLogin:
	default:
		return apperr.Invalid(prefix+"auth", "invalid_choice", "auth must be login or none")
	}
	switch {
	case s.Login == "":
		return apperr.Invalid(prefix+"login", "required", "a login is required with auth login")
	case len(s.Login) > maxLoginLen:
		return apperr.Invalid(prefix+"login", "too_long", "the login is longer than %d bytes", maxLoginLen)
	case !utf8.ValidString(s.Login) || hasControl(s.Login):
		return apperr.Invalid(prefix+"login", "invalid_login", "the login must be text without line breaks or control characters")
	}
	pw := s.Password.Reveal()
	switch {
	case pw == "" && !keepPassword:
		return apperr.Invalid(prefix+"password", "required", "a password is required with auth login")
	case len(pw) > maxPassLen:
		return apperr.Invalid(prefix+"password", "too_long", "the password is longer than %d bytes", maxPassLen)
	case strings.ContainsAny(pw, "\x00\r\n"):
		// NUL separates the fields of SASL PLAIN; line breaks cannot be
		// typed into a password field and only come from a paste error.
		return apperr.Invalid(prefix+"password", "invalid_password", "the password must not contain line breaks or NUL")
	}
	return nil
}

// ConnectionChanged reports whether o differs from s in anything that needs
// a new check: host, port, security, auth, login or password. Host names
// compare without regard to case.
func (s Settings) ConnectionChanged(o Settings) bool {
	return !strings.EqualFold(s.Host, o.Host) ||
		s.Port != o.Port ||
		s.Security != o.Security ||
		s.Auth != o.Auth ||
		s.Login != o.Login ||
		s.Password != o.Password
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

func hasNonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}
