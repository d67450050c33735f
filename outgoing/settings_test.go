package outgoing_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/secret"
	"github.com/mailsync/mailsync/outgoing"
)

func validSettings() outgoing.Settings {
	return outgoing.Settings{
		Host: "smtp.example.com", Port: 587, Security: outgoing.SecuritySTARTTLS,
		Auth: outgoing.AuthLogin, Login: "alice@example.com", Password: "app-password",
	}
}

func TestSettingsValidate(t *testing.T) {
	cases := []struct {
		name      string
		edit      func(*outgoing.Settings)
		keep      bool   // ValidateKeepingPassword
		wantField string // "" = valid
	}{
		{"valid", func(*outgoing.Settings) {}, false, ""},
		{"IPv4 literal", func(s *outgoing.Settings) { s.Host = "192.0.2.10" }, false, ""},
		{"IPv6 literal", func(s *outgoing.Settings) { s.Host = "2001:db8::25" }, false, ""},
		{"trailing dot", func(s *outgoing.Settings) { s.Host = "smtp.example.com." }, false, ""},
		{"single label", func(s *outgoing.Settings) { s.Host = "relay" }, false, ""},
		{"punycode", func(s *outgoing.Settings) { s.Host = "xn--e1afmkfd.xn--p1ai" }, false, ""},
		{"no auth needs no login", func(s *outgoing.Settings) { s.Auth, s.Login, s.Password = outgoing.AuthNone, "", "" }, false, ""},
		{"ssl", func(s *outgoing.Settings) { s.Security, s.Port = outgoing.SecuritySSL, 465 }, false, ""},
		{"none", func(s *outgoing.Settings) { s.Security, s.Port = outgoing.SecurityNone, 25 }, false, ""},
		{"port 65535", func(s *outgoing.Settings) { s.Port = 65535 }, false, ""},
		{"kept password", func(s *outgoing.Settings) { s.Password = "" }, true, ""},

		{"empty host", func(s *outgoing.Settings) { s.Host = "" }, false, "host"},
		{"scheme", func(s *outgoing.Settings) { s.Host = "smtp://smtp.example.com" }, false, "host"},
		{"port in host", func(s *outgoing.Settings) { s.Host = "smtp.example.com:587" }, false, "host"},
		{"bracketed IPv6", func(s *outgoing.Settings) { s.Host = "[2001:db8::25]" }, false, "host"},
		{"IPv6 zone", func(s *outgoing.Settings) { s.Host = "fe80::1%eth0" }, false, "host"},
		{"space", func(s *outgoing.Settings) { s.Host = "smtp example.com" }, false, "host"},
		{"leading space", func(s *outgoing.Settings) { s.Host = " smtp.example.com" }, false, "host"},
		{"path", func(s *outgoing.Settings) { s.Host = "smtp.example.com/x" }, false, "host"},
		{"email", func(s *outgoing.Settings) { s.Host = "alice@example.com" }, false, "host"},
		{"empty label", func(s *outgoing.Settings) { s.Host = "smtp..example.com" }, false, "host"},
		{"hyphen edge", func(s *outgoing.Settings) { s.Host = "-smtp.example.com" }, false, "host"},
		{"long label", func(s *outgoing.Settings) { s.Host = strings.Repeat("a", 64) + ".com" }, false, "host"},
		{"bad IP", func(s *outgoing.Settings) { s.Host = "192.168.1" }, false, "host"},
		{"unicode", func(s *outgoing.Settings) { s.Host = "почта.рф" }, false, "host"},
		{"line break", func(s *outgoing.Settings) { s.Host = "smtp.example.com\r\n" }, false, "host"},
		{"port 0", func(s *outgoing.Settings) { s.Port = 0 }, false, "port"},
		{"port too big", func(s *outgoing.Settings) { s.Port = 65536 }, false, "port"},
		{"negative port", func(s *outgoing.Settings) { s.Port = -1 }, false, "port"},
		{"security", func(s *outgoing.Settings) { s.Security = "tls" }, false, "security"},
		{"empty security", func(s *outgoing.Settings) { s.Security = "" }, false, "security"},
		{"auth", func(s *outgoing.Settings) { s.Auth = "oauth" }, false, "auth"},
		{"no login", func(s *outgoing.Settings) { s.Login = "" }, false, "login"},
		{"login with line break", func(s *outgoing.Settings) { s.Login = "a\nb" }, false, "login"},
		{"no password", func(s *outgoing.Settings) { s.Password = "" }, false, "password"},
		{"password with NUL", func(s *outgoing.Settings) { s.Password = "a\x00b" }, true, "password"},
		{"password too long", func(s *outgoing.Settings) { s.Password = secret.Secret(strings.Repeat("p", 1025)) }, false, "password"},
	}
	for _, c := range cases {
		for _, prefix := range []string{"", "smtp."} {
			s := validSettings()
			c.edit(&s)
			var err error
			if c.keep {
				err = s.ValidateKeepingPassword(prefix)
			} else {
				err = s.Validate(prefix)
			}
			if c.wantField == "" {
				if err != nil {
					t.Errorf("%s: Validate(%q) = %v, want nil", c.name, prefix, err)
				}
				continue
			}
			ae, ok := apperr.As(err)
			if !ok || !errors.Is(err, apperr.ErrInvalid) {
				t.Errorf("%s: Validate(%q) = %v, want an invalid-input *apperr.Error", c.name, prefix, err)
				continue
			}
			if want := prefix + c.wantField; ae.Field != want {
				t.Errorf("%s: Validate(%q) field = %q, want %q", c.name, prefix, ae.Field, want)
			}
			if ae.Code == "" || ae.Message == "" {
				t.Errorf("%s: Validate(%q) = %+v, want a code and a message", c.name, prefix, ae)
			}
			if strings.Contains(err.Error(), "app-password") {
				t.Errorf("%s: Validate(%q) error %q shows the password", c.name, prefix, err)
			}
		}
	}
}

func TestSettingsConnectionChanged(t *testing.T) {
	cases := []struct {
		name string
		edit func(*outgoing.Settings)
		want bool
	}{
		{"same", func(*outgoing.Settings) {}, false},
		{"host case", func(s *outgoing.Settings) { s.Host = "SMTP.Example.com" }, false},
		{"host", func(s *outgoing.Settings) { s.Host = "smtp2.example.com" }, true},
		{"port", func(s *outgoing.Settings) { s.Port = 465 }, true},
		{"security", func(s *outgoing.Settings) { s.Security = outgoing.SecuritySSL }, true},
		{"auth", func(s *outgoing.Settings) { s.Auth = outgoing.AuthNone }, true},
		{"login", func(s *outgoing.Settings) { s.Login = "bob@example.com" }, true},
		{"password", func(s *outgoing.Settings) { s.Password = "other" }, true},
	}
	for _, c := range cases {
		a, b := validSettings(), validSettings()
		c.edit(&b)
		if got := a.ConnectionChanged(b); got != c.want {
			t.Errorf("%s: ConnectionChanged() = %v, want %v", c.name, got, c.want)
		}
		if got := b.ConnectionChanged(a); got != c.want {
			t.Errorf("%s: ConnectionChanged() reversed = %v, want %v", c.name, got, c.want)
		}
	}
}
