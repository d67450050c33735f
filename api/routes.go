package api

import "net/http"

// routeTable is every route mailsync serves.
func (s *Server) routeTable() []route {
	return []route{
		{Method: "GET", Path: "/healthz", Access: Public, raw: http.HandlerFunc(s.healthz)},
		{Method: "GET", Path: "/readyz", Access: Public, raw: http.HandlerFunc(s.readyz)},
		{Method: "GET", Path: "/metrics", Access: Public, raw: s.metricsHandler()},
		{Method: "GET", Path: "/api/v1/me", Access: User, handle: s.me},
	}
}
