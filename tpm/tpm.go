package tpm

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/tpm/keys"
)

// Options configures a TPM. The zero value is ready to use.
type Options struct {
	// Logger receives warnings and the reasons for decisions such as the choice
	// of storage root key. Nil means no logging.
	Logger *zap.Logger
	// Counter, when set, counts every command sent; several TPM values may share one.
	Counter *Counter
	// BeforeCommand, when set, is called with the command's name before each
	// command is sent (crash tests stop the process there).
	BeforeCommand func(name string)
}

func (o Options) logger() *zap.Logger {
	if o.Logger == nil {
		return zap.NewNop()
	}
	return o.Logger
}

// TPM is an open TPM holding dpsagent's keys. It implements keys.Backend. All
// access is serialised: a TPM runs one command at a time, and a key must stay
// loaded between its Load and its Sign.
type TPM struct {
	mu      sync.Mutex
	tr      transport.TPM
	closer  io.Closer
	counter *Counter
	log     *zap.Logger
	spec    string

	srk    *srk // chosen on first use, kept for the TPM's lifetime
	curves []tpm2.TPMECCCurve
	closed bool
}

var _ keys.Backend = (*TPM)(nil)

// New wraps an already open transport. The TPM takes ownership: Close closes it.
func New(tr transport.TPMCloser, opts Options) (*TPM, error) {
	counter := opts.Counter
	if counter == nil {
		counter = &Counter{}
	}
	return &TPM{
		tr:      &countingTransport{next: tr, counter: counter, before: opts.BeforeCommand},
		closer:  tr,
		counter: counter,
		log:     opts.logger(),
		spec:    "(transport)",
	}, nil
}

// Commands is the number of TPM commands this TPM (and any other sharing its
// Counter) has sent so far.
func (t *TPM) Commands() uint64 { return t.counter.Total() }

// Counter returns the command counter, for per-command figures.
func (t *TPM) Counter() *Counter { return t.counter }

// Spec is the string the TPM was opened from.
func (t *TPM) Spec() string { return t.spec }

// Close flushes the storage root key if this process created it and closes the
// connection. Keys already created stay usable from their blobs.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	if t.srk != nil && t.srk.transient {
		if err := flush(t.tr, t.srk.handle.Handle); err != nil {
			errs = append(errs, fmt.Errorf("flush storage root key: %w", err))
		}
	}
	t.srk = nil
	if err := t.closer.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close TPM %s: %w", t.spec, err))
	}
	return errors.Join(errs...)
}

// lock takes the TPM for one operation and fails if it is closed.
func (t *TPM) lock() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return errClosed
	}
	return nil
}

func flush(tr transport.TPM, h tpm2.TPMHandle) error {
	_, err := tpm2.FlushContext{FlushHandle: h}.Execute(tr)
	return err
}
