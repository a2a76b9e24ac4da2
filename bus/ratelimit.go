package bus

import "sync"

// rateMap remembers, per key, when something last happened.
type rateMap struct {
	mu sync.Mutex
	m  map[string]int64
}

// swapIfOlder records now for key if the previous record is at least
// minGap old (or absent); ok says whether it did.
func (s *rateMap) swapIfOlder(key string, now, minGap int64) (prev int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]int64{}
	}
	prev, seen := s.m[key]
	if seen && now-prev < minGap {
		return prev, false
	}
	if len(s.m) > 4096 {
		s.m = map[string]int64{}
	}
	s.m[key] = now
	return prev, true
}
