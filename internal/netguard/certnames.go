package netguard

import (
	"crypto/x509"
	"slices"
)

// CertNames lists the names a certificate is valid for: DNS names and IP
// addresses, or the common name when it has neither. The SMTP and IMAP
// checks show them when a server's certificate is for another name.
func CertNames(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	names := slices.Clone(cert.DNSNames)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	return names
}
