package netguard

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseAllowList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{" ,, \t", nil},
		{"127.0.0.0/8,::1,10.1.2.3", []string{"127.0.0.0/8", "::1/128", "10.1.2.3/32"}},
		{" 10.0.0.0/8 ,  192.168.0.0/16\tfd00::/8\n", []string{"10.0.0.0/8", "192.168.0.0/16", "fd00::/8"}},
		{"10.0.0.0/8 192.168.0.0/16", []string{"10.0.0.0/8", "192.168.0.0/16"}},
		{"10.1.2.3/8", []string{"10.0.0.0/8"}},
		{"::ffff:10.0.0.0/104", []string{"10.0.0.0/8"}},
		{"::ffff:10.1.2.3", []string{"10.1.2.3/32"}},
		{"::ffff:0:0/96", []string{"0.0.0.0/0"}}, // all IPv4-mapped = all IPv4
		{"::ffff:0:0/80", []string{"::/80"}},     // host bits cleared
		{"0.0.0.0/0,::/0", []string{"0.0.0.0/0", "::/0"}},
		{"64:ff9b::/96", []string{"64:ff9b::/96"}},
	}
	for _, tt := range tests {
		got, err := ParseAllowList(tt.in)
		if err != nil {
			t.Errorf("ParseAllowList(%q) error = %v", tt.in, err)
			continue
		}
		var want []netip.Prefix
		for _, s := range tt.want {
			want = append(want, netip.MustParsePrefix(s))
		}
		if !slices.Equal(got, want) {
			t.Errorf("ParseAllowList(%q) = %v, want %v", tt.in, got, want)
		}
	}
}

func TestParseAllowListErrors(t *testing.T) {
	tests := []struct {
		in  string
		bad string // the item the error must name
	}{
		{"localhost", "localhost"},
		{"10.0.0.1,bogus", "bogus"},
		{"10.0.0.0/8 mail.example.com 127.0.0.1", "mail.example.com"},
		{"10.0.0.0/33", "10.0.0.0/33"},
		{"::1/129", "::1/129"},
		{"10.0.0.0/8/8", "10.0.0.0/8/8"},
		{"300.1.1.1", "300.1.1.1"},
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"10.0.0.0/", "10.0.0.0/"},
		{"*", "*"},
		{"10.0.0.1;10.0.0.2", "10.0.0.1;10.0.0.2"},
	}
	for _, tt := range tests {
		got, err := ParseAllowList(tt.in)
		if err == nil {
			t.Errorf("ParseAllowList(%q) = %v, want error", tt.in, got)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, `"`+tt.bad+`"`) || !strings.Contains(msg, AllowHostsEnv) {
			t.Errorf("ParseAllowList(%q) error = %q, want it to name %q and %s", tt.in, msg, tt.bad, AllowHostsEnv)
		}
		if got != nil {
			t.Errorf("ParseAllowList(%q) = %v with an error, want nil", tt.in, got)
		}
	}
}

func TestBlockedErrorMessage(t *testing.T) {
	const hint = "; an admin can allow it with MAILSYNC_ALLOW_HOSTS"
	a := netip.MustParseAddr
	tests := []struct {
		err  *BlockedError
		want string
	}{
		{&BlockedError{Host: "mx.example", Addr: a("10.0.0.1"), Class: ClassPrivate},
			`host "mx.example" resolves to a private address (10.0.0.1)` + hint},
		{&BlockedError{Host: "10.0.0.1", Addr: a("10.0.0.1"), Class: ClassPrivate},
			`address 10.0.0.1 is a private address` + hint},
		{&BlockedError{Addr: a("10.0.0.1"), Class: ClassPrivate},
			`address 10.0.0.1 is a private address` + hint},
		{&BlockedError{Host: "::ffff:127.0.0.1", Addr: a("::ffff:127.0.0.1"), Class: ClassLoopback},
			`address ::ffff:127.0.0.1 is a loopback address` + hint},
		{&BlockedError{Host: "mx.example", Addr: a("::"), Class: ClassUnspecified},
			`host "mx.example" resolves to an unspecified address (::)` + hint},
		{&BlockedError{Host: "imds", Addr: a("169.254.169.254"), Class: ClassMetadata},
			`host "imds" resolves to a cloud metadata address (169.254.169.254)` + hint},
		{&BlockedError{Host: "cgn", Addr: a("100.64.0.1"), Class: ClassCGNAT},
			`host "cgn" resolves to a shared (CGNAT) address (100.64.0.1)` + hint},
		{&BlockedError{Host: "mx.example", Addr: a("64:ff9b::7f00:1"), Class: ClassNAT64},
			`host "mx.example" resolves to a NAT64 address embedding a loopback address (64:ff9b::7f00:1, embedding 127.0.0.1)` + hint},
		{&BlockedError{Host: "64:ff9b::a00:1", Addr: a("64:ff9b::a00:1"), Class: ClassNAT64},
			`address 64:ff9b::a00:1 is a NAT64 address embedding a private address (10.0.0.1)` + hint},
		{&BlockedError{Host: "six", Addr: a("2002:a9fe:a9fe::1"), Class: Class6to4},
			`host "six" resolves to a 6to4 address embedding a cloud metadata address (2002:a9fe:a9fe::1, embedding 169.254.169.254)` + hint},
		{&BlockedError{Host: "t", Addr: a("2001::3f57:fefe"), Class: ClassTeredo},
			`host "t" resolves to a Teredo address embedding a private address (2001::3f57:fefe, embedding 192.168.1.1)` + hint},
		{&BlockedError{Host: "t", Addr: a("64:ff9b:1::1"), Class: ClassNAT64Local},
			`host "t" resolves to a local-use NAT64 address (64:ff9b:1::1)` + hint},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("BlockedError%+v.Error() =\n  %s\nwant\n  %s", *tt.err, got, tt.want)
		}
		if !errors.Is(tt.err, ErrBlocked) {
			t.Errorf("errors.Is(%v, ErrBlocked) = false, want true", tt.err)
		}
	}
}

// TestBlockedErrorFromCheck checks the message a real refusal carries, for a
// name and for a literal.
func TestBlockedErrorFromCheck(t *testing.T) {
	var d Dialer
	tests := []struct {
		host, addr, want string
	}{
		{"mx.example", "10.0.0.1", `host "mx.example" resolves to a private address (10.0.0.1); an admin can allow it with MAILSYNC_ALLOW_HOSTS`},
		{"10.0.0.1", "10.0.0.1", `address 10.0.0.1 is a private address; an admin can allow it with MAILSYNC_ALLOW_HOSTS`},
		{"fe80::1%eth0", "fe80::1%eth0", `address fe80::1 is a link-local address; an admin can allow it with MAILSYNC_ALLOW_HOSTS`},
	}
	for _, tt := range tests {
		err := d.Check(tt.host, netip.MustParseAddr(tt.addr))
		if err == nil || err.Error() != tt.want {
			t.Errorf("Check(%q, %s) = %v, want %s", tt.host, tt.addr, err, tt.want)
		}
	}
}
