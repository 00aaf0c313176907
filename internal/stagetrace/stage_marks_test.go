package stagetrace

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestMarkBelowDebugAllocatesNothing(t *testing.T) {
	log := slog.New(slog.NewJSONHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { Mark(ctx, log, EdgeRead) }); n != 0 {
		t.Fatalf("Mark below debug level allocates %v times", n)
	}
}

func TestMarkRecordsStageAndStamp(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	Mark(context.Background(), log, PollerPolled)
	var rec struct {
		Msg   string `json:"msg"`
		Stage string `json:"stage"`
		AtUS  int64  `json:"at_us"`
	}
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil {
		t.Fatalf("decode record %q: %v", out.String(), err)
	}
	if rec.Msg != Message || rec.Stage != PollerPolled || rec.AtUS <= 0 {
		t.Fatalf("record %+v, want msg %q, stage %q and a stamp", rec, Message, PollerPolled)
	}
}

func TestMarkOnNilLoggerDoesNothing(t *testing.T) {
	Mark(context.Background(), nil, ClientRead)
}
