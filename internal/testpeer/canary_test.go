package testpeer

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// redacted stands for a secret type whose LogValue hides it.
type redacted string

func (redacted) LogValue() slog.Value { return slog.StringValue("[redacted]") }

func TestCanaryHandler(t *testing.T) {
	plain := base64.StdEncoding.EncodeToString([]byte("\x00u@example.org\x00" + CanaryPassword))
	cases := []struct {
		name string
		log  func(*slog.Logger)
		want bool // a report
	}{
		{"clean record", func(l *slog.Logger) { l.Debug("dial", "host", "mx.example.org") }, false},
		{"redacted value", func(l *slog.Logger) { l.Info("auth", "password", redacted(CanaryPassword)) }, false},
		{"plain in the message", func(l *slog.Logger) { l.Debug("AUTH with " + CanaryPassword) }, true},
		{"in a group attribute", func(l *slog.Logger) { l.WithGroup("smtp").With("reply", "x "+CanaryPassword).Warn("w") }, true},
		{"AUTH PLAIN base64", func(l *slog.Logger) { l.Debug("wire", "line", "AUTH PLAIN "+plain) }, true},
		{"bytes, base64 in JSON", func(l *slog.Logger) { l.Error("raw", "data", []byte("x"+CanaryPassword)) }, true},
		{"URL-escaped", func(l *slog.Logger) { l.Info("url", "q", "pw=Canary%2B7f3a%2F9c1e%3DPa55%26word") }, true},
		{"an extra secret", func(l *slog.Logger) { l.Info("token", "t", "mst_extra") }, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var reports []string
			h := newCanaryHandler(func(f string, a ...any) { reports = append(reports, fmt.Sprintf(f, a...)) },
				slog.DiscardHandler, []string{"u@example.org"}, "mst_extra")
			c.log(slog.New(h))
			if got := len(reports) > 0; got != c.want {
				t.Errorf("reported %v (%q), want a report %v", got, reports, c.want)
			}
		})
	}
}

func TestMITMRewrites(t *testing.T) {
	ehlo := "250-localhost Hello\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"
	if got, want := string(stripSMTPExtension([]byte(ehlo), "STARTTLS")), "250-localhost Hello\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"; got != want {
		t.Errorf("stripSMTPExtension() = %q, want %q", got, want)
	}
	last := "250-localhost\r\n250 STARTTLS\r\n"
	if got, want := string(stripSMTPExtension([]byte(last), "STARTTLS")), "250 localhost\r\n"; got != want {
		t.Errorf("stripSMTPExtension() = %q, want %q", got, want)
	}
	s := &mitmSession{attack: MITMStripSTARTTLS}
	for in, want := range map[string]string{
		"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED AUTH=PLAIN] ready\r\n": "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n",
		"* CAPABILITY IMAP4rev1 starttls IDLE\r\nA1 OK done\r\n":                  "* CAPABILITY IMAP4rev1 IDLE\r\nA1 OK done\r\n",
	} {
		if got := s.imapCaps(in); got != want {
			t.Errorf("imapCaps(%q) = %q, want %q", in, got, want)
		}
	}
	if got := (&mitmSession{attack: MITMRelay}).imapCaps("* CAPABILITY STARTTLS\r\n"); !strings.Contains(got, "STARTTLS") {
		t.Errorf("a relay changed the capabilities: %q", got)
	}
}
