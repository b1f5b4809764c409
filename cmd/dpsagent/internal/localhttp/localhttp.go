// Package localhttp serves and asks HTTP/1.1 on local sockets: the daemon's
// API on a unix socket and its metrics on a loopback port.
//
// Each connection carries one request and one response, read and written
// with net/http's own parser and writer (http.ReadRequest, Response.Write).
// http.Server and http.Client would bring HTTP/2, keep-alive pools and proxy
// logic, 0.75 MiB of a gateway binary, for endpoints that answer a few small
// requests a minute from the same machine. What they bring that matters here
// is below: deadlines and bounds on what a client may send, a busy answer
// rather than a queue behind silent clients, a 500 rather than a crash when
// a handler panics, retries when Accept fails, warnings that a client cannot
// flood the log with, and the lingering close that lets a client read the
// answer before the connection goes.
package localhttp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"
)

// Limits of what a client may send and how long it may take.
const (
	// DefaultTimeout bounds a whole exchange: reading the request, handling
	// it, writing the response and reading away what the client still sends.
	DefaultTimeout = 5 * time.Second
	// MaxRequestBytes bounds the request line, headers and whatever follows
	// them that is read away.
	MaxRequestBytes = 64 << 10
	// MaxConns is how many exchanges run at once; the request of a
	// connection beyond them is answered 503 Service Unavailable at once.
	MaxConns = 8
	// MaxResponseBytes bounds the body a client reads.
	MaxResponseBytes = 4 << 20
	// warnEvery is the least time between two warnings of a server: a local
	// client can cause thousands a second, and journald would drop the
	// agent's own messages to keep up.
	warnEvery = time.Minute
)

// Server answers requests by method and exact path. Its zero value is not
// usable: make one with New.
type Server struct {
	routes  map[string]map[string]http.HandlerFunc // path → method → handler
	timeout time.Duration
	logf    func(format string, args ...any)
	now     func() time.Time // the clock of warnEvery
	slots   chan struct{}    // one per exchange under way

	mu         sync.Mutex
	listeners  map[net.Listener]struct{}
	closed     bool
	active     sync.WaitGroup
	lastWarn   time.Time // when a warning was last logged
	suppressed int       // warnings not logged since
}

// New makes a server; logf (may be nil) hears of failed exchanges, at most
// once a minute.
func New(logf func(format string, args ...any)) *Server {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Server{
		routes:    map[string]map[string]http.HandlerFunc{},
		timeout:   DefaultTimeout,
		logf:      logf,
		now:       time.Now,
		slots:     make(chan struct{}, MaxConns),
		listeners: map[net.Listener]struct{}{},
	}
}

// SetTimeout changes DefaultTimeout; call it before Serve.
func (s *Server) SetTimeout(d time.Duration) { s.timeout = d }

// Handle routes method and path (such as "GET", "/v1/status") to h. A GET
// route answers HEAD too, without the body. No route takes a request body:
// h sees none, and what the client sends after its headers is read away
// after the answer.
func (s *Server) Handle(method, path string, h http.HandlerFunc) {
	if s.routes[path] == nil {
		s.routes[path] = map[string]http.HandlerFunc{}
	}
	s.routes[path][method] = h
}

// ErrClosed is returned by Serve on a closed server.
var ErrClosed = errors.New("localhttp: server closed")

// Serve answers connections on l until Close, then returns nil. It returns
// ErrClosed at once on a server already closed, and an error wrapping
// net.ErrClosed if l is closed under it; other Accept errors (such as too
// many open files) are logged and tried again after a pause, as http.Server
// does. Serve closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	defer l.Close()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var pause time.Duration // after a failed Accept: 5 ms doubling to 1 s
	for {
		conn, err := l.Accept()
		s.mu.Lock()
		closed := s.closed
		if err == nil && !closed {
			s.active.Add(1) // under mu, so never after Close began to wait
		}
		s.mu.Unlock()
		switch {
		case closed:
			if conn != nil {
				conn.Close()
			}
			return nil
		case errors.Is(err, net.ErrClosed):
			return err
		case err != nil:
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.warn("local HTTP: accept on %s: %v; trying again in %v", l.Addr(), err, pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		go func() {
			defer s.active.Done()
			select {
			case s.slots <- struct{}{}:
				s.exchange(conn, s.answer)
				<-s.slots
			default:
				s.exchange(conn, busy)
			}
		}()
	}
}

// Close stops every Serve and waits for the exchanges under way, which their
// deadline bounds.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	var errs []error
	for l := range s.listeners {
		errs = append(errs, l.Close())
	}
	s.mu.Unlock()
	s.active.Wait()
	return errors.Join(errs...)
}

// ServeConn answers the one request on conn and closes it.
func (s *Server) ServeConn(conn net.Conn) { s.exchange(conn, s.answer) }

// exchange reads the request on conn, writes the response answer gives and
// closes conn.
func (s *Server) exchange(conn net.Conn, answer func(*http.Request) *http.Response) {
	_ = conn.SetDeadline(time.Now().Add(s.timeout))
	limited := &io.LimitedReader{R: conn, N: MaxRequestBytes}
	in := bufio.NewReader(limited)
	req, err := http.ReadRequest(in)
	if err != nil {
		if errors.Is(err, io.EOF) && limited.N == MaxRequestBytes {
			conn.Close() // connected and left without a word
			return
		}
		status := http.StatusBadRequest
		if limited.N == 0 {
			status = http.StatusRequestHeaderFieldsTooLarge
		}
		s.warn("local HTTP: refused a request from %s: %v", remote(conn), err)
		s.finish(conn, in, plain(status, http.StatusText(status)))
		return
	}
	req.Body = http.NoBody // read away after the answer, if at all
	resp := answer(req)
	resp.Request = req
	s.finish(conn, in, resp)
}

// busy answers a request beyond MaxConns at once, rather than after a wait
// behind clients that may say nothing until their deadline. The request is
// read first: a client such as net/http's takes an answer that comes before
// its request for a broken connection.
func busy(*http.Request) *http.Response {
	resp := plain(http.StatusServiceUnavailable, "busy: try again in a second")
	resp.Header.Set("Retry-After", "1")
	return resp
}

// finish writes resp and closes conn as http.Server does: it shuts its side
// and reads away what the client still sends, until the client closes, the
// request limit or the deadline. Closing with unread data would reset the
// connection, and a reset can discard the answer before the client reads it.
func (s *Server) finish(conn net.Conn, in io.Reader, resp *http.Response) {
	defer conn.Close()
	out := bufio.NewWriter(conn)
	err := resp.Write(out)
	if err == nil {
		err = out.Flush()
	}
	if err != nil {
		s.warn("local HTTP: answer %s: %v", remote(conn), err)
		return
	}
	switch c := conn.(type) { // the connections Serve accepts
	case *net.UnixConn:
		_ = c.CloseWrite()
	case *net.TCPConn:
		_ = c.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, in)
}

// answer runs the handler for req, or says why there is none.
func (s *Server) answer(req *http.Request) *http.Response {
	methods, ok := s.routes[req.URL.Path]
	if !ok {
		return plain(http.StatusNotFound, "no such path: "+req.URL.Path)
	}
	h, ok := methods[req.Method]
	if !ok && req.Method == http.MethodHead {
		h, ok = methods[http.MethodGet]
	}
	if !ok {
		allow := make([]string, 0, len(methods)+1)
		for m := range methods {
			allow = append(allow, m)
		}
		if _, get := methods[http.MethodGet]; get && methods[http.MethodHead] == nil {
			allow = append(allow, http.MethodHead)
		}
		sort.Strings(allow)
		resp := plain(http.StatusMethodNotAllowed, req.Method+" is not allowed here; use "+strings.Join(allow, ", "))
		resp.Header.Set("Allow", strings.Join(allow, ", "))
		return resp
	}
	w := &responseWriter{header: http.Header{}}
	if !s.run(h, w, req) {
		return plain(http.StatusInternalServerError, http.StatusText(http.StatusInternalServerError))
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.header.Get("Content-Type") == "" && w.body.Len() > 0 {
		w.header.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	return response(w.status, w.header, w.body.Bytes())
}

// run calls h and says whether it returned: a panic is logged, not left to
// stop the daemon.
func (s *Server) run(h http.HandlerFunc, w http.ResponseWriter, req *http.Request) (returned bool) {
	defer func() {
		if p := recover(); p != nil {
			s.warn("local HTTP: %s %s panicked: %v\n%s", req.Method, req.URL.Path, p, debug.Stack())
		}
	}()
	h(w, req)
	return true
}

// warn logs a complaint unless another was logged less than warnEvery ago;
// the next one logged counts those left out.
func (s *Server) warn(format string, args ...any) {
	s.mu.Lock()
	now := s.now()
	if !s.lastWarn.IsZero() && now.Sub(s.lastWarn) < warnEvery {
		s.suppressed++
		s.mu.Unlock()
		return
	}
	left := s.suppressed
	s.lastWarn, s.suppressed = now, 0
	s.mu.Unlock()
	if left > 0 {
		format += " (%d more warnings since the last one were not logged)"
		args = append(args, left)
	}
	s.logf(format, args...)
}
func response(status int, header http.Header, body []byte) *http.Response {
	return &http.Response{
		StatusCode:    status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Close:         true,
	}
}

func plain(status int, text string) *http.Response {
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	return response(status, h, []byte(text+"\n"))
}

func remote(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "a local client"
}

// responseWriter keeps a handler's answer until it returns.
type responseWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// Response is what a server answered.
type Response struct {
	StatusCode int
	Status     string // such as "404 Not Found"
	Header     http.Header
	Body       []byte
}

// Do sends method and path over a connection from dial and reads the whole
// answer. The exchange ends with ctx or after DefaultTimeout, whichever is
// first.
func Do(ctx context.Context, dial func(context.Context) (net.Conn, error), method, path string) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	conn, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, nil)
	if err != nil {
		return nil, err
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return nil, fmt.Errorf("send %s %s: %w", method, path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, fmt.Errorf("read the answer to %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the answer to %s %s: %w", method, path, err)
	}
	if len(body) > MaxResponseBytes {
		return nil, fmt.Errorf("the answer to %s %s is over %d bytes", method, path, MaxResponseBytes)
	}
	return &Response{StatusCode: resp.StatusCode, Status: resp.Status, Header: resp.Header, Body: body}, nil
}
