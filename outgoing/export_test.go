package outgoing

// HandoffOpen reports whether a worker of s runs and takes submissions in
// memory (handoff.go).
func HandoffOpen(s *Service) bool { return s.handoff.Load() != nil }
