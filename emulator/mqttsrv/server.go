package mqttsrv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Server accepts MQTT 3.1.1 connections and hands each to the Handler. One Server serves one endpoint
// (DPS or hub), since the packet limit and the handler differ between them.
type Server struct {
	opts Options
	log  *zap.Logger

	// ctx is the parent of every connection's context; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*Conn]struct{}
	// wg counts Serve loops and connection goroutines; Add only under mu while !closed, so Close's Wait
	// cannot race with a new Add.
	wg sync.WaitGroup
}

// New returns a Server configured by opts, or an error naming the option that is wrong.
func New(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		opts:      opts,
		log:       opts.Logger.Named("mqttsrv"),
		ctx:       ctx,
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*Conn]struct{}),
	}, nil
}

// Serve accepts connections on l until Close, then returns ErrServerClosed. l is normally a TLS listener
// (tls.NewListener); a plain one serves MQTT without TLS, which Azure never does but tests may. To see client
// certificates, its tls.Config must ask for them (ClientAuth: tls.RequestClientCert or stronger). Serve may
// be called for several listeners.
func (s *Server) Serve(l net.Listener) error {
	if !s.addListener(l) {
		l.Close()
		return ErrServerClosed
	}
	defer s.wg.Done()
	defer s.removeListener(l)
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			// Like net/http: running out of file descriptors or buffers, or a client that hung up
			// during accept, is worth waiting out, not a reason to stop.
			if transientAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("retry_in", backoff))
				select {
				case <-time.After(backoff):
				case <-s.ctx.Done():
					return ErrServerClosed
				}
				continue
			}
			return fmt.Errorf("accept MQTT connections on %s: %w", l.Addr(), err)
		}
		backoff = 0
		s.start(nc)
	}
}

// Close stops every listener, closes every connection with ErrServerClosed and returns once every Serve
// loop and connection goroutine has ended, Session.Closed included. It must not be called from a Handler or
// a Session, whose goroutine it would wait for.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	s.cancel()
	var errs []error
	for l := range s.listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close listener %s: %w", l.Addr(), err))
		}
	}
	for c := range s.conns {
		c.Close(ErrServerClosed)
	}
	s.mu.Unlock()
	s.wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) addListener(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) removeListener(l net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, l)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// start runs a new connection on its own goroutine, unless the server is closing.
func (s *Server) start(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.cancel(ErrServerClosed)
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.serve()
	}()
}

func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func transientAccept(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
