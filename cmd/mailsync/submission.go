package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/mailsync/mailsync/api/submission"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/mailsync/mailsync/outgoing"
)

// submissionListener is one listener of the SMTP submission server.
type submissionListener struct {
	ln          net.Listener
	implicitTLS bool
}

// off reports whether a listen setting turns its listener off.
func off(addr string) bool { return addr == "" || addr == "off" }

// startSubmission builds the SMTP submission server and opens its listeners
// (none when both listen settings are off).
func startSubmission(cfg *Config, out *outgoing.Service, us *users.Store, log *slog.Logger) (*submission.Server, []submissionListener, error) {
	if off(cfg.SubmissionListen) && off(cfg.SubmissionTLSListen) {
		return nil, nil, nil
	}
	var tlsCfg *tls.Config
	if cfg.SubmissionTLSCert != "" || cfg.SubmissionTLSKey != "" {
		var err error
		if tlsCfg, err = submission.TLSFromFiles(cfg.SubmissionTLSCert, cfg.SubmissionTLSKey); err != nil {
			return nil, nil, fmt.Errorf("MAILSYNC_SUBMISSION_TLS_CERT/KEY: %w", err)
		}
	}
	if !off(cfg.SubmissionTLSListen) && tlsCfg == nil {
		return nil, nil, errors.New("MAILSYNC_SUBMISSION_TLS_LISTEN needs MAILSYNC_SUBMISSION_TLS_CERT and MAILSYNC_SUBMISSION_TLS_KEY")
	}
	sub, err := submission.New(&submission.Options{
		Domain: cfg.HelloName, TLS: tlsCfg, TrustLoopback: cfg.SubmissionTrustLoopback,
		LoopbackUser: cfg.AdminEmail, MaxMessageBytes: int64(cfg.MaxMessageBytes),
	}, submission.Deps{Outgoing: out, Users: us, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	var lns []submissionListener
	closeAll := func() {
		for _, l := range lns {
			l.ln.Close()
		}
	}
	for _, l := range []struct {
		addr, setting string
		implicitTLS   bool
	}{
		{cfg.SubmissionListen, "MAILSYNC_SUBMISSION_LISTEN", false},
		{cfg.SubmissionTLSListen, "MAILSYNC_SUBMISSION_TLS_LISTEN", true},
	} {
		if off(l.addr) {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("listen on %s (%s): %w", l.addr, l.setting, err)
		}
		lns = append(lns, submissionListener{ln: ln, implicitTLS: l.implicitTLS})
	}
	return sub, lns, nil
}
