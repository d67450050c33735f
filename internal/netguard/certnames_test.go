package netguard_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"slices"
	"testing"

	"github.com/mailsync/mailsync/internal/netguard"
)

func TestCertNames(t *testing.T) {
	cases := []struct {
		name string
		cert *x509.Certificate
		want []string
	}{
		{"nil", nil, nil},
		{"DNS names and addresses", &x509.Certificate{DNSNames: []string{"mx.example.com"},
			IPAddresses: []net.IP{net.ParseIP("192.0.2.1")}, Subject: pkix.Name{CommonName: "ignored"}},
			[]string{"mx.example.com", "192.0.2.1"}},
		{"common name only", &x509.Certificate{Subject: pkix.Name{CommonName: "legacy.example.com"}}, []string{"legacy.example.com"}},
		{"nothing", &x509.Certificate{}, []string{}},
	}
	for _, c := range cases {
		if got := netguard.CertNames(c.cert); !slices.Equal(got, c.want) {
			t.Errorf("%s: CertNames() = %q, want %q", c.name, got, c.want)
		}
	}
}
