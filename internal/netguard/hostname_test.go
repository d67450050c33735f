package netguard

import "testing"

func TestCheckHostSyntax(t *testing.T) {
	cases := []struct {
		host, code string
	}{
		{"smtp.example.com", ""}, {"smtp.example.com.", ""}, {"mail_relay.corp.example", ""},
		{"10.0.0.5", ""}, {"2001:db8::1", ""}, {"localhost", ""},
		{"", "required"}, {" smtp.example.com", "invalid_host"}, {"smtp example.com", "invalid_host"},
		{"smtps://smtp.example.com", "invalid_host"}, {"smtp.example.com/path", "invalid_host"},
		{"user@smtp.example.com", "invalid_host"}, {"smtp.example.com:465", "invalid_host"},
		{"[2001:db8::1]", "invalid_host"}, {"fe80::1%eth0", "invalid_host"}, {"почта.рф", "invalid_host"},
		{"-bad.example.com", "invalid_host"}, {"a..b", "invalid_host"}, {"192.168.1", "invalid_host"},
	}
	for _, c := range cases {
		code, msg := CheckHostSyntax(c.host, "SMTP")
		if code != c.code || (code != "" && msg == "") {
			t.Errorf("CheckHostSyntax(%q) = %q %q, want code %q", c.host, code, msg, c.code)
		}
	}
	if _, msg := CheckHostSyntax("", "IMAP"); msg != "the IMAP server's host name is required, e.g. imap.example.com" {
		t.Errorf("required message for IMAP = %q", msg)
	}
}
