// Package localhttp serves and asks HTTP/1.1 on local sockets: the daemon's
// API on a unix socket and its metrics on a loopback port.
//
// Each connection carries one request and one response, read and written
// with net/http's own parser and writer (http.ReadRequest, Response.Write).
// http.Server and http.Client would bring HTTP/2, keep-alive pools and proxy
// logic, 0.75 MiB of a gateway binary, for endpoints that answer a few small
// requests a minute from the same machine; what they bring that matters here,
// deadlines and bounds on what a client may send, is below.
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
	"sort"
	"strings"
	"sync"
	"time"
)

// Limits of what a client may send and how long it may take.
const (
	// DefaultTimeout bounds a whole exchange: reading the request, handling
	// it, writing the response.
	DefaultTimeout = 5 * time.Second
	// MaxRequestBytes bounds the request line, headers and any body read.
	MaxRequestBytes = 64 << 10
	// MaxConns is how many exchanges run at once; further connections wait
	// in the listener's backlog.
	MaxConns = 8
	// MaxResponseBytes bounds the body a client reads.
	MaxResponseBytes = 4 << 20
)

// Server answers requests by method and exact path. Its zero value is not
// usable: make one with New.
type Server struct {
	routes  map[string]map[string]http.HandlerFunc // path → method → handler
	timeout time.Duration
	logf    func(format string, args ...any)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	closed    bool
	active    sync.WaitGroup
}

// New makes a server; logf (may be nil) hears of failed exchanges.
func New(logf func(format string, args ...any)) *Server {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Server{
		routes:    map[string]map[string]http.HandlerFunc{},
		timeout:   DefaultTimeout,
		logf:      logf,
		listeners: map[net.Listener]struct{}{},
	}
}

// SetTimeout changes DefaultTimeout; call it before Serve.
func (s *Server) SetTimeout(d time.Duration) { s.timeout = d }

// Handle routes method and path (such as "GET", "/v1/status") to h. A GET
// route answers HEAD too, without the body.
func (s *Server) Handle(method, path string, h http.HandlerFunc) {
	if s.routes[path] == nil {
		s.routes[path] = map[string]http.HandlerFunc{}
	}
	s.routes[path][method] = h
}

// ErrClosed is returned by Serve on a closed server.
var ErrClosed = errors.New("localhttp: server closed")

// Serve answers connections on l until Close; it then returns nil.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()

	slots := make(chan struct{}, MaxConns)
	for {
		slots <- struct{}{}
		conn, err := l.Accept()
		if err != nil {
			<-slots
			s.mu.Lock()
			closed := s.closed
			delete(s.listeners, l)
			s.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			<-slots
			continue // the next Accept fails and returns
		}
		s.active.Add(1) // under mu, so never after Close began to wait
		s.mu.Unlock()
		go func() {
			defer func() { <-slots; s.active.Done() }()
			s.ServeConn(conn)
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
func (s *Server) ServeConn(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(s.timeout))
	limited := &io.LimitedReader{R: conn, N: MaxRequestBytes}
	req, err := http.ReadRequest(bufio.NewReader(limited))
	if err != nil {
		if errors.Is(err, io.EOF) && limited.N == MaxRequestBytes {
			return // connected and left without a word
		}
		status := http.StatusBadRequest
		if limited.N == 0 {
			status = http.StatusRequestHeaderFieldsTooLarge
		}
		s.logf("local HTTP: refused a request from %s: %v", remote(conn), err)
		_ = plain(status, http.StatusText(status)).Write(conn)
		return
	}
	// No route takes a body: read it away (within the limit) so that
	// closing the connection does not reset it under the client's feet.
	_, _ = io.Copy(io.Discard, req.Body)
	resp := s.answer(req)
	resp.Request = req
	if err := resp.Write(conn); err != nil {
		s.logf("local HTTP: answer %s %s: %v", req.Method, req.URL.Path, err)
	}
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
		allow := make([]string, 0, len(methods))
		for m := range methods {
			allow = append(allow, m)
		}
		sort.Strings(allow)
		resp := plain(http.StatusMethodNotAllowed, req.Method+" is not allowed here; use "+strings.Join(allow, ", "))
		resp.Header.Set("Allow", strings.Join(allow, ", "))
		return resp
	}
	w := &responseWriter{header: http.Header{}}
	h(w, req)
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.header.Get("Content-Type") == "" && w.body.Len() > 0 {
		w.header.Set("Content-Type", http.DetectContentType(w.body.Bytes()))
	}
	return response(w.status, w.header, w.body.Bytes())
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
