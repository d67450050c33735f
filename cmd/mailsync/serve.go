package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/mailsync/mailsync/api"
	"github.com/mailsync/mailsync/api/web"
	"github.com/mailsync/mailsync/internal/netguard"
	"github.com/mailsync/mailsync/internal/store"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/mailsync/mailsync/mailbox"
	"github.com/mailsync/mailsync/outgoing"
	imapsync "github.com/mailsync/mailsync/sync"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// worker is a background loop that runs until its context ends.
type worker interface {
	Name() string
	Run(ctx context.Context) error
}

func cmdServe(ctx context.Context, e env, args []string) error {
	var cfg Config
	rest, err := parseConfig("serve", serveSettings(&cfg), args, e.getenv, e.stderr)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageError{fmt.Sprintf("serve takes no arguments, got %q", rest)}
	}
	cfg.finish()
	log, err := newLogger(&cfg, e.stderr)
	if err != nil {
		return err
	}
	allow, err := netguard.ParseAllowList(cfg.AllowHosts)
	if err != nil {
		return fmt.Errorf("MAILSYNC_ALLOW_HOSTS: %w", err)
	}
	roots, err := outgoing.LoadRootCAs(cfg.ExtraCAFile)
	if err != nil {
		return fmt.Errorf("MAILSYNC_EXTRA_CA_FILE: %w", err)
	}

	db, err := openDB(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	box, err := openBox(ctx, &cfg, db, log)
	if err != nil {
		return err
	}
	userStore := users.New(db)
	admin, token, created, err := userStore.Bootstrap(ctx, cfg.AdminEmail)
	if err != nil {
		return fmt.Errorf("create the first admin: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	network := &outgoing.Network{
		Dialer:    &netguard.Dialer{Allow: allow},
		RootCAs:   roots,
		HelloName: cfg.HelloName,
		Logger:    log,
	}
	out := outgoing.NewService(outgoing.Deps{
		DB: db, Box: box, Network: network, Logger: log, Metrics: outgoing.NewMetrics(reg),
	}, outgoing.Config{
		CheckTimeout:     cfg.CheckTimeout,
		MaxMessageBytes:  int64(cfg.MaxMessageBytes),
		MaxQueueAge:      cfg.MaxQueueAge,
		LeaseTTL:         cfg.OutboxLease,
		MaxConnsPerRoute: cfg.SMTPConnsPerAccount,

		ConfirmationAccount: cfg.ConfirmationAccount,
	})
	out.RegisterQueueGauge(reg)
	lookup := &mailbox.Lookup{Resolver: net.DefaultResolver}
	mailboxes := mailbox.NewService(mailbox.Deps{
		DB: db, Box: box, Outgoing: out, Lookup: lookup, Logger: log,
		IMAP: &mailbox.IMAPNetwork{Dialer: network.Dialer, RootCAs: roots, Logger: log},
	}, mailbox.Config{CheckTimeout: cfg.CheckTimeout, OutgoingStatusTTL: cfg.OutgoingStatusTTL})
	engine := imapsync.New(imapsync.Deps{DB: db, Mailboxes: mailboxes, Logger: log, Metrics: reg}, imapsync.Config{
		PollInterval: cfg.SyncPollInterval, MaxMailboxesPerInstance: cfg.SyncMaxMailboxes, LeaseTTL: cfg.SyncLease,
		CommandTimeout: cfg.SyncCommandTimeout, BatchSize: cfg.SyncBatch, MaxMessageBytes: int64(cfg.SyncMaxMessageBytes),
	})
	pages := web.New(web.Deps{
		Logger: log, Users: userStore, Outgoing: out, Mailboxes: mailboxes, Senders: out, Providers: lookup, Messages: engine,
	}, web.Options{SecureCookies: cfg.SecureCookies})
	srv := api.New(api.Deps{
		Logger: log, Users: userStore, Ready: db, Outgoing: out, Mailboxes: mailboxes, Senders: out, ProviderLookup: lookup,
		Messages: engine, Registry: reg, Version: version, Web: pages,
	})

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s (MAILSYNC_LISTEN): %w", cfg.Listen, err)
	}
	httpSrv := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
	}

	sub, subLns, err := startSubmission(&cfg, out, userStore, log)
	if err != nil {
		ln.Close()
		return err
	}
	if cfg.DebugListen != "" {
		stopDebug, err := startDebug(cfg.DebugListen, e.stdout, log)
		if err != nil {
			ln.Close()
			for _, l := range subLns {
				l.ln.Close()
			}
			return err
		}
		defer stopDebug()
	}
	for _, l := range subLns {
		suffix := ""
		if l.implicitTLS {
			suffix = " (implicit TLS)"
		}
		fmt.Fprintf(e.stdout, "SMTP submission listening on %s%s\n", l.ln.Addr(), suffix)
	}
	fmt.Fprintf(e.stdout, "mailsync %s listening on http://%s\n", version, ln.Addr())
	fmt.Fprintf(e.stdout, "database: %s\n", store.RedactDSN(cfg.DB))
	if created {
		fmt.Fprintf(e.stdout, "first start: created the admin %s; its API token, shown only now:\n  %s\n", admin.Email, token.Reveal())
		fmt.Fprintf(e.stdout, "data directory: %s (keep secret.key safe: it unlocks the stored passwords)\n", cfg.DataDir)
	}

	// Ordered shutdown: stop accepting and finish requests, then stop the
	// workers, then close the database (deferred above).
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	workers := []worker{out.NewWorker(), engine}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			if err := w.Run(workCtx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("worker stopped", "worker", w.Name(), "error", err)
			}
		})
	}

	serveErr := make(chan error, 1+len(subLns))
	go func() { serveErr <- httpSrv.Serve(ln) }()
	subCtx := context.WithoutCancel(ctx)
	for _, l := range subLns {
		go func() {
			if l.implicitTLS {
				serveErr <- sub.ServeTLS(subCtx, l.ln)
			} else {
				serveErr <- sub.Serve(subCtx, l.ln)
			}
		}()
	}
	log.Info("serving", "addr", ln.Addr().String(), "version", version)

	select {
	case err := <-serveErr:
		if sub != nil {
			sub.Close()
		}
		httpSrv.Close()
		stopWork()
		wg.Wait()
		return fmt.Errorf("server stopped: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	shutCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(shutCtx); err != nil {
		log.Warn("in-flight requests cut at shutdown", "error", err)
		httpSrv.Close()
	}
	if sub != nil {
		if err := sub.Shutdown(shutCtx); err != nil {
			log.Warn("SMTP submission transactions cut at shutdown", "error", err)
		}
	}
	for range 1 + len(subLns) {
		<-serveErr
	}
	stopWork()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-shutCtx.Done():
		log.Warn("workers did not stop within the shutdown timeout")
	}
	log.Info("stopped")
	return nil
}

// startDebug serves the Go profiler on addr until the returned func is
// called. It is off unless MAILSYNC_DEBUG_LISTEN is set.
func startDebug(addr string, stdout io.Writer, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (MAILSYNC_DEBUG_LISTEN): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("profiler stopped", "error", err)
		}
	}()
	fmt.Fprintf(stdout, "profiler listening on http://%s/debug/pprof/\n", ln.Addr())
	return func() { srv.Close() }, nil
}
