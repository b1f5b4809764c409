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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logbook keeps what a server logged.
type logbook struct {
	mu    sync.Mutex
	lines []string
}

func (b *logbook) logf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, fmt.Sprintf(format, args...))
}

func (b *logbook) all() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...)
}

// served is a server under test with the daemon's routes and one that
// panics.
type served struct {
	*Server
	log  *logbook
	dial func(context.Context) (net.Conn, error)
	addr string // the socket's path, or HOST:PORT
}

// serve starts a server on a unix socket, as the daemon's API runs.
func serve(t *testing.T, timeout time.Duration) *served {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "api.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, l, timeout)
}

// serveTCP starts a server on a loopback port, as the metrics run.
func serveTCP(t *testing.T, timeout time.Duration) *served {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, l, timeout)
}

func serveOn(t *testing.T, l net.Listener, timeout time.Duration) *served {
	t.Helper()
	log := &logbook{}
	s := New(log.logf)
	if timeout > 0 {
		s.SetTimeout(timeout)
	}
	s.Handle("GET", "/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"state":"connected"}`+"\n")
	})
	s.Handle("POST", "/v1/renew", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	})
	s.Handle("GET", "/v1/panic", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "half an answer")
		panic("boom")
	})
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	})
	network, addr := l.Addr().Network(), l.Addr().String()
	return &served{Server: s, log: log, addr: addr, dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}

// stdClient is net/http's own client: the independent judge of the server.
func (sv *served) stdClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:           func(ctx context.Context, _, _ string) (net.Conn, error) { return sv.dial(ctx) },
		ExpectContinueTimeout: 3 * time.Second,
	}}
}

// rawExchange sends raw bytes and returns what came back before the server
// closed the connection.
func (sv *served) rawExchange(t *testing.T, send []byte) string {
	t.Helper()
	conn, err := sv.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { _, _ = conn.Write(send) }()
	got, _ := io.ReadAll(conn)
	return string(got)
}

func (sv *served) get(t *testing.T, path string) *Response {
	t.Helper()
	resp, err := Do(context.Background(), sv.dial, "GET", path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

func TestServerAnswersNetHTTPClient(t *testing.T) {
	sv := serve(t, 0)
	c := sv.stdClient()
	defer c.CloseIdleConnections()
	for _, tc := range []struct {
		method, path string
		status       int
		body, ctype  string
		allow        string
	}{
		{"GET", "/v1/status", 200, `{"state":"connected"}` + "\n", "application/json", ""},
		{"HEAD", "/v1/status", 200, "", "application/json", ""},
		{"POST", "/v1/renew", 202, "", "", ""},
		{"GET", "/v1/renew", 405, "GET is not allowed here; use POST\n", "text/plain; charset=utf-8", "POST"},
		{"HEAD", "/v1/renew", 405, "", "text/plain; charset=utf-8", "POST"},
		// A GET route answers HEAD too, and Allow says so.
		{"DELETE", "/v1/status", 405, "DELETE is not allowed here; use GET, HEAD\n", "text/plain; charset=utf-8", "GET, HEAD"},
		{"GET", "/nope", 404, "no such path: /nope\n", "text/plain; charset=utf-8", ""},
	} {
		req, err := http.NewRequest(tc.method, "http://dpsagent"+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.status || string(body) != tc.body || resp.Header.Get("Content-Type") != tc.ctype ||
			resp.Header.Get("Allow") != tc.allow {
			t.Errorf("%s %s = %d %q, Content-Type %q, Allow %q; want %d %q, %q, %q", tc.method, tc.path,
				resp.StatusCode, body, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), tc.status, tc.body, tc.ctype, tc.allow)
		}
		if tc.method != "HEAD" && resp.ContentLength != int64(len(tc.body)) {
			t.Errorf("%s %s: Content-Length %d, want %d", tc.method, tc.path, resp.ContentLength, len(tc.body))
		}
		if !resp.Close {
			t.Errorf("%s %s: the answer does not say Connection: close", tc.method, tc.path)
		}
	}
}

func TestDo(t *testing.T) {
	sv := serve(t, 0)
	resp := sv.get(t, "/v1/status")
	if resp.StatusCode != 200 || string(resp.Body) != `{"state":"connected"}`+"\n" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Do = %+v", resp)
	}
	resp, err := Do(context.Background(), sv.dial, "POST", "/v1/renew")
	if err != nil || resp.StatusCode != 202 || resp.Status != "202 Accepted" {
		t.Errorf("POST = %+v, %v", resp, err)
	}
	missing := filepath.Join(t.TempDir(), "none.sock")
	_, err = Do(context.Background(), func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", missing)
	}, "GET", "/")
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Do on a missing socket = %v, want the dial's ENOENT", err)
	}
}

func TestServerRefusesBadRequests(t *testing.T) {
	sv := serve(t, 0)
	for _, tc := range []struct {
		name string
		send []byte
		want string
	}{
		{"not HTTP", []byte("HELLO THERE\r\n\r\n"), "HTTP/1.1 400 Bad Request\r\n"},
		{"bad header", []byte("GET /v1/status HTTP/1.1\r\nHost localhost\r\n\r\n"), "HTTP/1.1 400 Bad Request\r\n"},
		{"headers without end", append([]byte("GET /v1/status HTTP/1.1\r\nX: "), bytes.Repeat([]byte("a"), 2*MaxRequestBytes)...),
			"HTTP/1.1 431 Request Header Fields Too Large\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sv.rawExchange(t, tc.send); !strings.HasPrefix(got, tc.want) || !strings.Contains(got, "Connection: close\r\n") {
				t.Errorf("answer %q, want it to start %q and close", got, tc.want)
			}
		})
	}
	// The server goes on answering.
	if resp := sv.get(t, "/v1/status"); resp.StatusCode != 200 {
		t.Errorf("after the bad requests: %+v", resp)
	}
}

// A local user looping malformed requests must not flood the journal: one
// warning a minute, which counts those left out.
func TestServerRateLimitsWarnings(t *testing.T) {
	log := &logbook{}
	s := New(log.logf)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return clock }
	bad := func(n int) {
		for range n {
			c := &recordingConn{in: strings.NewReader("X\r\n\r\n")}
			s.ServeConn(c)
			if !strings.HasPrefix(c.out.String(), "HTTP/1.1 400 ") {
				t.Fatalf("answer %q, want 400", c.out.String())
			}
		}
	}
	bad(1000)
	clock = clock.Add(59 * time.Second)
	bad(1)
	if got := log.all(); len(got) != 1 || !strings.Contains(got[0], "refused a request") {
		t.Fatalf("after 1001 bad requests within a minute, logged %d lines, want 1: %q", len(got), got)
	}
	clock = clock.Add(time.Second)
	bad(1)
	got := log.all()
	if len(got) != 2 || !strings.Contains(got[1], "(1000 more warnings since the last one were not logged)") {
		t.Errorf("a minute later: logged %q; want a second warning counting the 1000 left out", got)
	}
}

// A client that connects and says nothing is cut off at the deadline, and
// does not keep others waiting meanwhile.
func TestServerCutsOffSilentClients(t *testing.T) {
	sv := serve(t, 300*time.Millisecond)
	var silent []net.Conn
	for range MaxConns - 1 {
		c, err := sv.dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	if resp := sv.get(t, "/v1/status"); resp.StatusCode != 200 {
		t.Errorf("beside %d silent clients: %+v", len(silent), resp)
	}
	for _, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		if n != 0 || err != io.EOF {
			t.Errorf("a silent client read %d bytes, %v; want the server to close it (EOF)", n, err)
		}
		c.Close()
	}
}

// With every slot taken by clients that say nothing, the next client hears
// 503 at once rather than wait for their deadline.
func TestServerAnswersBusyAtOnce(t *testing.T) {
	sv := serve(t, 3*time.Second)
	var silent []net.Conn
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	for range MaxConns {
		c, err := sv.dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, c)
	}
	for deadline := time.Now().Add(5 * time.Second); len(sv.slots) < MaxConns; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d slots taken by the silent clients", len(sv.slots), MaxConns)
		}
	}
	c := sv.stdClient()
	c.Timeout = time.Second
	resp, err := c.Get("http://dpsagent/v1/status")
	if err != nil {
		t.Fatalf("beside %d silent clients: %v", MaxConns, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || !resp.Close {
		t.Errorf("beside %d silent clients: %s %v, close %v; want 503 with Retry-After: 1 and Connection: close",
			MaxConns, resp.Status, resp.Header, resp.Close)
	}
	for _, c := range silent {
		c.Close()
	}
	silent = nil
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if resp := sv.get(t, "/v1/status"); resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slots did not come free when the silent clients left")
		}
	}
}

// flakyListener fails its first Accepts as a listener out of file
// descriptors does, and notes when each came.
type flakyListener struct {
	net.Listener
	mu       sync.Mutex
	failures int
	at       []time.Time
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.at = append(l.at, time.Now())
	fail := len(l.at) <= l.failures
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// An Accept that fails is tried again after a pause that doubles, as
// http.Server does, and logged once, not each time.
func TestServeRetriesFailedAccepts(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "api.sock"))
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyListener{Listener: l, failures: 5}
	sv := serveOn(t, flaky, 0)
	if resp := sv.get(t, "/v1/status"); resp.StatusCode != 200 {
		t.Fatalf("after failed accepts: %+v", resp)
	}
	flaky.mu.Lock()
	at := flaky.at
	flaky.mu.Unlock()
	for i, want := range []time.Duration{5, 10, 20, 40, 80} {
		if got := at[i+1].Sub(at[i]); got < want*time.Millisecond {
			t.Errorf("pause %d after a failed accept: %v, want at least %v ms", i+1, got, want)
		}
	}
	if got := sv.log.all(); len(got) != 1 || !strings.Contains(got[0], "too many open files") || !strings.Contains(got[0], "trying again in 5ms") {
		t.Errorf("logged %q; want one warning naming the error", got)
	}
}

// A handler that panics costs its client a 500, not the daemon its life.
func TestServerSurvivesAPanickingHandler(t *testing.T) {
	sv := serve(t, 0)
	resp := sv.get(t, "/v1/panic")
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(string(resp.Body), "half") {
		t.Errorf("a panicking handler: %d %q, want 500 without its half answer", resp.StatusCode, resp.Body)
	}
	if got := sv.log.all(); len(got) != 1 || !strings.Contains(got[0], "GET /v1/panic panicked: boom") {
		t.Errorf("logged %q; want the panic and its value", got)
	}
	if resp := sv.get(t, "/v1/status"); resp.StatusCode != 200 {
		t.Errorf("after the panic: %+v", resp)
	}
}

// The answer comes before any body is read: a client that sends
// Expect: 100-continue waits for no 100 (which this server never sends).
func TestServerAnswersBeforeTheBody(t *testing.T) {
	sv := serve(t, 0)
	t.Run("raw", func(t *testing.T) {
		for _, sv := range []*served{sv, serveTCP(t, 0)} {
			conn, err := sv.dial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.WriteString(conn, "POST /v1/renew HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(conn) // the server shuts its side after the answer
			if !strings.HasPrefix(string(got), "HTTP/1.1 202 Accepted\r\n") || err != nil {
				t.Errorf("%s without the body: %q, %v; want 202 at once", sv.addr, got, err)
			}
		}
	})
	t.Run("net/http", func(t *testing.T) {
		c := sv.stdClient() // waits 3s for a 100 Continue before it sends the body
		defer c.CloseIdleConnections()
		req, err := http.NewRequest("POST", "http://dpsagent/v1/renew", strings.NewReader(strings.Repeat("x", 100)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Expect", "100-continue")
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if d := time.Since(start); resp.StatusCode != 202 || d > time.Second {
			t.Errorf("POST with Expect: 100-continue: %s after %v; want 202 at once", resp.Status, d)
		}
	})
}

// A body sent with the request is read away after the answer, so closing
// does not reset the connection before the client has the answer; over TCP
// a reset can throw the answer away unread.
func TestServerReadsAwayABody(t *testing.T) {
	body := strings.Repeat("x", 60<<10)
	for _, sv := range []*served{serve(t, 0), serveTCP(t, 0)} {
		for range 20 {
			got := sv.rawExchange(t, []byte("POST /v1/renew HTTP/1.1\r\nHost: localhost\r\nContent-Length: 61440\r\n\r\n"+body))
			if !strings.HasPrefix(got, "HTTP/1.1 202 Accepted\r\n") {
				t.Fatalf("%s: answer %q", sv.addr, got)
			}
			c := sv.stdClient()
			resp, err := c.Post("http://dpsagent/v1/renew", "text/plain", strings.NewReader(body))
			if err != nil {
				t.Fatalf("%s: net/http: %v", sv.addr, err)
			}
			resp.Body.Close()
			c.CloseIdleConnections()
			if resp.StatusCode != 202 {
				t.Fatalf("%s: net/http: %s", sv.addr, resp.Status)
			}
		}
	}
}

// After the answer the server reads away what the client still sends, so
// the client's writes do not fail under it: a client that sees a write fail
// (net/http's can) may report that rather than the answer it was sent.
func TestServerLingersForWhatTheClientStillSends(t *testing.T) {
	sv := serve(t, 0)
	conn, err := sv.dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, "POST /v1/renew HTTP/1.1\r\nHost: x\r\nContent-Length: 32768\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	in := bufio.NewReader(conn)
	resp, err := http.ReadResponse(in, nil)
	if err != nil || resp.StatusCode != 202 {
		t.Fatalf("before the body: %v, %v; want 202", resp, err)
	}
	time.Sleep(50 * time.Millisecond) // a server that does not linger has closed by now
	if _, err := conn.Write(bytes.Repeat([]byte("x"), 32768)); err != nil {
		t.Errorf("the body after the answer: %v; want the server to read it away", err)
	}
	if err := conn.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(in); len(rest) != 0 || err != nil {
		t.Errorf("after the answer: %q, %v; want the end", rest, err)
	}
}

func TestDoTimesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mute.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	if _, err := Do(ctx, dial, "GET", "/v1/status"); err == nil {
		t.Error("a server that never answers: no error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Do took %v past a 200ms context", d)
	}
	(<-accepted).Close()
}

// Close before Serve: Serve says so and closes the listener it was given.
func TestServeAfterClose(t *testing.T) {
	s := New(nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := s.Serve(l); err != ErrClosed {
		t.Errorf("Serve after Close = %v, want ErrClosed", err)
	}
	_ = l.(*net.UnixListener).SetDeadline(time.Now()) // an open listener times out
	if c, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		if c != nil {
			c.Close()
		}
		t.Errorf("after Serve returned, Accept = %v; want the listener closed", err)
	}
}

// FuzzServeConn: whatever a client sends, the server answers with an HTTP
// status line or closes quietly, and never panics.
func FuzzServeConn(f *testing.F) {
	for _, seed := range []string{
		"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /v1/status HTTP/1.0\r\n\r\n",
		"POST /v1/renew HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
		"POST /v1/renew HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST /v1/renew HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
		"GET /%zz HTTP/1.1\r\n\r\n",
		"GET http://other/v1/status HTTP/1.1\r\n\r\n",
		"\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	s := New(nil)
	s.Handle("GET", "/v1/status", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "{}") })
	s.Handle("POST", "/v1/renew", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &recordingConn{in: bytes.NewReader(data)}
		s.ServeConn(c)
		if got := c.out.Bytes(); len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 ")) {
			t.Fatalf("answer %q does not start with a status line", got)
		}
		if !c.closed {
			t.Fatal("the connection was left open")
		}
	})
}

// recordingConn is a connection whose client sent in and then stopped
// sending; it keeps what the server wrote.
type recordingConn struct {
	net.Conn // the methods the server must not use panic
	in       io.Reader
	out      bytes.Buffer
	closed   bool
}

func (c *recordingConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *recordingConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *recordingConn) Close() error                { c.closed = true; return nil }
func (c *recordingConn) SetDeadline(time.Time) error { return nil }
func (c *recordingConn) RemoteAddr() net.Addr        { return &net.UnixAddr{Net: "unix"} }
