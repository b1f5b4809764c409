package mqtt

import (
	"context"
	"errors"
	"testing"
	"time"
)

// fakeToken is a paho.Token under the test's control.
type fakeToken struct {
	done chan struct{}
	err  error
}

func newFakeToken() *fakeToken { return &fakeToken{done: make(chan struct{})} }

func (f *fakeToken) complete(err error) { f.err = err; close(f.done) }
func (f *fakeToken) Wait() bool         { <-f.done; return true }
func (f *fakeToken) WaitTimeout(d time.Duration) bool {
	select {
	case <-f.done:
		return true
	case <-time.After(d):
		return false
	}
}
func (f *fakeToken) Done() <-chan struct{} { return f.done }
func (f *fakeToken) Error() error          { return f.err }

func TestWaitToken(t *testing.T) {
	boom := errors.New("connection lost before Publish completed")
	t.Run("completes", func(t *testing.T) {
		tok := newFakeToken()
		tok.complete(nil)
		if err := WaitToken(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("token error", func(t *testing.T) {
		tok := newFakeToken()
		tok.complete(boom)
		if err := WaitToken(context.Background(), tok); !errors.Is(err, boom) {
			t.Fatalf("error %v, want %v", err, boom)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(10 * time.Millisecond); cancel() }()
		if err := WaitToken(ctx, newFakeToken()); !errors.Is(err, context.Canceled) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
	})
	t.Run("done token wins over done context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		tok := newFakeToken()
		tok.complete(nil)
		for range 100 {
			if err := WaitToken(ctx, tok); err != nil {
				t.Fatalf("error %v for a completed token", err)
			}
		}
	})
}

func TestRefusedFilters(t *testing.T) {
	if err := refusedFilters(map[string]byte{"$dps/registrations/res/#": 1}); err != nil {
		t.Errorf("granted QoS 1: %v", err)
	}
	err := refusedFilters(map[string]byte{"b/#": 0x80, "ok": 0, "a/#": 0x80})
	if !errors.Is(err, ErrSubscriptionRefused) || err.Error() != `subscription refused by the server: ["a/#" "b/#"]` {
		t.Errorf("error %v, want both refused filters in order", err)
	}
}
