package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mailsync/mailsync/internal/apperr"
	"github.com/mailsync/mailsync/internal/users"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Authenticator resolves an API token to its user.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (users.User, error)
}

// Readiness tells whether the service can serve: the database answers and
// carries every migration.
type Readiness interface {
	Ready(ctx context.Context) error
}

// Deps are the services the API calls.
type Deps struct {
	Logger         *slog.Logger
	Users          Authenticator
	Ready          Readiness
	Outgoing       Outgoing
	Mailboxes      Mailboxes
	Messages       Messages // the IMAP sync engine; nil: its routes answer 503
	Senders        Senders
	ProviderLookup ProviderLookup
	Registry       *prometheus.Registry // where metrics are registered and gathered from
	Version        string
	// Web, when set, serves every request outside /api/, /healthz, /readyz
	// and /metrics: the server-rendered pages (package api/web).
	Web http.Handler
}

// Server serves the API.
type Server struct {
	log      *slog.Logger
	deps     Deps
	mux      *http.ServeMux
	routes   []route
	metrics  *httpMetrics
	fallback http.Handler
}

// New builds the server and its route table.
func New(deps Deps) *Server {
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	s := &Server{log: deps.Logger, deps: deps, mux: http.NewServeMux()}
	s.metrics = newHTTPMetrics(deps.Registry)
	s.routes = s.routeTable()
	for _, rt := range s.routes {
		s.mux.Handle(rt.Method+" "+rt.Path, s.wrap(rt))
	}
	s.fallback = s.wrap(route{Access: Public, handle: s.noRoute})
	return s
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := s.mux.Handler(r); pattern == "" {
			if s.deps.Web != nil && !apiPath(r.URL.Path) {
				s.deps.Web.ServeHTTP(w, r)
				return
			}
			s.fallback.ServeHTTP(w, r)
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// apiPath reports whether a path belongs to the API and the operators'
// endpoints rather than to the pages.
func apiPath(p string) bool {
	switch p {
	case "/api", "/healthz", "/readyz", "/metrics":
		return true
	}
	return strings.HasPrefix(p, "/api/")
}

// noRoute answers a request no route matches: 405 with Allow when the path
// exists under other methods, else 404, both in the error shape.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) error {
	var allowed []string
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		return &apperr.Error{Kind: errMethod, Code: "method_not_allowed",
			Message: fmt.Sprintf("%s is not allowed here; allowed: %s", r.Method, strings.Join(allowed, ", "))}
	}
	return apperr.New(apperr.ErrNotFound, "no_route", "no such route: %s %s", r.Method, r.URL.Path)
}

// Access is what a route requires of its caller.
type Access int

// Access levels.
const (
	Public Access = iota // no token
	User                 // any valid token
	Admin                // an admin's token
)

func (a Access) String() string {
	return [...]string{"public", "user", "admin"}[a]
}

// RouteInfo describes one route, for documentation and tests.
type RouteInfo struct {
	Method string
	Path   string
	Access Access
}

// Routes lists the route table.
func (s *Server) Routes() []RouteInfo {
	out := make([]RouteInfo, 0, len(s.routes))
	for _, rt := range s.routes {
		out = append(out, RouteInfo{Method: rt.Method, Path: rt.Path, Access: rt.Access})
	}
	return out
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type route struct {
	Method string
	Path   string
	Access Access
	handle handlerFunc
	// raw routes write their own response (probes, metrics).
	raw http.Handler
}

type ctxKey int

const userKey ctxKey = 1

// caller returns the authenticated user of a request on a User or Admin
// route.
func caller(r *http.Request) users.User {
	u, _ := r.Context().Value(userKey).(users.User)
	return u
}

// wrap adds, around one route: authentication and authorization, the error
// shape, request metrics and the access log.
func (s *Server) wrap(rt route) http.Handler {
	label := rt.Method + " " + rt.Path
	if rt.Method == "" {
		label = "unmatched"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				s.log.ErrorContext(r.Context(), "panic in handler", "route", label, "panic", p)
				if !sw.wrote {
					s.writeError(sw, r, fmt.Errorf("panic: %v", p))
				}
			}
			elapsed := time.Since(start)
			s.metrics.observe(label, sw.status, elapsed)
			s.log.DebugContext(r.Context(), "request", "method", r.Method, "route", label,
				"status", sw.status, "elapsed_ms", elapsed.Milliseconds())
		}()
		if rt.raw != nil {
			rt.raw.ServeHTTP(sw, r)
			return
		}
		if rt.Access != Public {
			u, err := s.authenticate(r)
			if err != nil {
				s.writeError(sw, r, err)
				return
			}
			if rt.Access == Admin && !u.Admin {
				s.writeError(sw, r, apperr.New(apperr.ErrForbidden, "admin_only", "this action needs an administrator"))
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), userKey, u))
		}
		if err := rt.handle(sw, r); err != nil {
			s.writeError(sw, r, err)
		}
	})
}

func (s *Server) authenticate(r *http.Request) (users.User, error) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return users.User{}, apperr.New(apperr.ErrUnauthenticated, "unauthenticated",
			"send an API token as \"Authorization: Bearer <token>\"")
	}
	return s.deps.Users.Authenticate(r.Context(), strings.TrimSpace(token))
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.wrote = true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailsync_http_requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mailsync_http_request_duration_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.latency)
	return m
}

func (m *httpMetrics) observe(route string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.deps.Registry, promhttp.HandlerOpts{ErrorLog: nil})
}
