package submission

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// TLSFromFiles returns a server TLS configuration presenting the PEM
// certificate chain and key in certFile and keyFile. The files are read now,
// so that a mistake stops the start, and read again on a handshake after
// either file changed, so that a renewed certificate is used without a
// restart; a renewal that cannot be loaded keeps the previous certificate.
func TLSFromFiles(certFile, keyFile string) (*tls.Config, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}, nil
}

type certReloader struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time // the later of the two files' modification times
}

func (r *certReloader) stamp() (time.Time, error) {
	var latest time.Time
	for _, f := range []string{r.certFile, r.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return time.Time{}, err
		}
		if st.ModTime().After(latest) {
			latest = st.ModTime()
		}
	}
	return latest, nil
}

func (r *certReloader) load() error {
	mt, err := r.stamp()
	if err != nil {
		return fmt.Errorf("submission certificate: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("submission certificate %s with key %s: %w", r.certFile, r.keyFile, err)
	}
	r.mu.Lock()
	r.cert, r.modTime = &cert, mt
	r.mu.Unlock()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	cert, known := r.cert, r.modTime
	r.mu.Unlock()
	if mt, err := r.stamp(); err == nil && !mt.Equal(known) {
		if err := r.load(); err == nil {
			r.mu.Lock()
			cert = r.cert
			r.mu.Unlock()
		}
	}
	return cert, nil
}
