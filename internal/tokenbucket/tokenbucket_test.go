package tokenbucket

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name       string
		at         time.Duration // since now
		n          float64
		want       bool
		tokensLeft float64
	}{
		{"first use starts full", 0, 1, true, 2},
		{"second of the burst", 0, 1, true, 1},
		{"third of the burst", 0, 1, true, 0},
		{"over the burst", 0, 1, false, 0},
		{"refilled after 0.5 s at 2/s", 500 * time.Millisecond, 1, true, 0},
		{"nothing more at the same instant", 500 * time.Millisecond, 1, false, 0},
		{"a clock going back refills nothing", 0, 1, false, 0},
		{"refill is capped at the burst", time.Hour, 3, true, 0},
		{"more than the burst is never allowed", 2 * time.Hour, 4, false, 3},
	}
	var b Bucket
	for _, tt := range tests {
		if got := b.Take(now.Add(tt.at), tt.n, 2, 3); got != tt.want {
			t.Fatalf("%s: Take = %v, want %v", tt.name, got, tt.want)
		}
		if b.tokens != tt.tokensLeft {
			t.Fatalf("%s: %v tokens left, want %v", tt.name, b.tokens, tt.tokensLeft)
		}
	}
}

func TestReserve(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name string
		at   time.Duration // since now
		want time.Duration
	}{
		{"first of the burst at once", 0, 0},
		{"second of the burst at once", 0, 0},
		{"third waits one refill (0.5 s at 2/s)", 0, 500 * time.Millisecond},
		{"fourth waits two", 0, time.Second},
		{"a wait served repays the debt", time.Second, 500 * time.Millisecond},
		{"a long pause fills the burst again", time.Hour, 0},
	}
	var b Bucket
	for _, tt := range tests {
		if got := b.Reserve(now.Add(tt.at), 1, 2, 2); got != tt.want {
			t.Fatalf("%s: Reserve = %v, want %v", tt.name, got, tt.want)
		}
	}
}
