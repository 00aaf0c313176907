package bench

import (
	"sync"
	"testing"
)

func TestSequenceAccounting(t *testing.T) {
	for _, tc := range []struct {
		name     string
		expected int
		arrivals []int
		want     Integrity
		complete bool
	}{
		{"in order", 5, []int{0, 1, 2, 3, 4}, Integrity{}, true},
		{"nothing arrived", 3, nil, Integrity{Lost: 3}, false},
		{"one lost in the middle", 5, []int{0, 1, 3, 4}, Integrity{Lost: 1}, false},
		{"tail lost", 5, []int{0, 1, 2}, Integrity{Lost: 2}, false},
		{"duplicate", 3, []int{0, 1, 1, 2}, Integrity{Duplicated: 1}, true},
		{"duplicate of an early one after later ones", 3, []int{0, 1, 2, 0}, Integrity{Duplicated: 1}, true},
		{"swap", 4, []int{0, 2, 1, 3}, Integrity{OutOfOrder: 1}, true},
		{"late first", 4, []int{1, 2, 3, 0}, Integrity{OutOfOrder: 1}, true},
		{"reversed", 4, []int{3, 2, 1, 0}, Integrity{OutOfOrder: 3}, true},
		{"unexpected indexes", 2, []int{0, -1, 2, 1}, Integrity{Unexpected: 2}, true},
		{"all at once", 3, []int{2, 2, 0, 5}, Integrity{Lost: 1, Duplicated: 1, OutOfOrder: 1, Unexpected: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewSequence(tc.expected)
			for _, i := range tc.arrivals {
				s.Observe(i)
			}
			if got := s.Integrity(); got != tc.want {
				t.Errorf("integrity %+v, want %+v", got, tc.want)
			}
			if got := s.Complete(); got != tc.complete {
				t.Errorf("complete %v, want %v", got, tc.complete)
			}
			if got := s.Integrity().OK(); got != (tc.want == Integrity{}) {
				t.Errorf("OK %v for %+v", got, tc.want)
			}
		})
	}
}

func TestIntegrityAdds(t *testing.T) {
	a := Integrity{Lost: 1, Duplicated: 2, OutOfOrder: 3, Unexpected: 4}
	if got := a.Add(a); got != (Integrity{2, 4, 6, 8}) {
		t.Fatalf("sum %+v", got)
	}
}

func TestSequenceConcurrentObservers(t *testing.T) {
	s := NewSequence(1000)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < 1000; i += 4 {
				s.Observe(i)
			}
		})
	}
	wg.Wait()
	if got := s.Integrity(); got.Lost != 0 || got.Duplicated != 0 || !s.Complete() || s.Received() != 1000 {
		t.Fatalf("integrity %+v, received %d", got, s.Received())
	}
}
