package bench

import "sync"

// Sequence accounts for the messages one receiver expects, numbered 0..Expected-1 in the order they
// were sent: each index must arrive exactly once and in order. It is safe for concurrent use.
//
// An index seen before is a duplicate; an index lower than the highest seen so far (and not a
// duplicate) arrived out of order; an index never seen is lost; an index outside 0..Expected-1 is
// unexpected.
type Sequence struct {
	mu         sync.Mutex
	expected   int
	seen       []bool
	distinct   int
	highest    int
	duplicated int
	reordered  int
	unexpected int
}

// NewSequence expects the indexes 0..expected-1.
func NewSequence(expected int) *Sequence {
	return &Sequence{expected: expected, seen: make([]bool, expected), highest: -1}
}

// Observe records the arrival of index i.
func (s *Sequence) Observe(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case i < 0 || i >= s.expected:
		s.unexpected++
	case s.seen[i]:
		s.duplicated++
	default:
		s.seen[i] = true
		s.distinct++
		if i < s.highest {
			s.reordered++
		}
		s.highest = max(s.highest, i)
	}
}

// Complete reports whether every expected index has arrived.
func (s *Sequence) Complete() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.distinct == s.expected
}

// Received is how many distinct expected indexes have arrived.
func (s *Sequence) Received() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.distinct
}

// Integrity is the outcome of the accounting; every field is 0 on a correct run.
type Integrity struct {
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
	OutOfOrder int `json:"out_of_order"`
	Unexpected int `json:"unexpected"`
}

// Add sums two outcomes.
func (a Integrity) Add(b Integrity) Integrity {
	return Integrity{a.Lost + b.Lost, a.Duplicated + b.Duplicated, a.OutOfOrder + b.OutOfOrder, a.Unexpected + b.Unexpected}
}

// OK reports a run without loss, duplicates, reordering or unexpected messages.
func (a Integrity) OK() bool { return a == Integrity{} }

// Integrity reads the counts; indexes not seen yet count as lost.
func (s *Sequence) Integrity() Integrity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Integrity{Lost: s.expected - s.distinct, Duplicated: s.duplicated, OutOfOrder: s.reordered, Unexpected: s.unexpected}
}
