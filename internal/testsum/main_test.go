package main

import (
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	const m = "example.com/m"
	in := `{"Action":"start","Package":"example.com/m/a"}
{"Action":"run","Package":"example.com/m/a","Test":"TestOK"}
{"Action":"output","Package":"example.com/m/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"output","Package":"example.com/m/a","Test":"TestOK","Output":"    a_test.go:5: chatter\n"}
{"Action":"output","Package":"example.com/m/a","Test":"TestOK","Output":"--- PASS: TestOK (1.50s)\n"}
{"Action":"pass","Package":"example.com/m/a","Test":"TestOK","Elapsed":1.5}
{"Action":"output","Package":"example.com/m/a","Test":"TestSub/one","Output":"    a_test.go:9: no fuse here\n"}
{"Action":"output","Package":"example.com/m/a","Test":"TestSub/one","Output":"--- SKIP: TestSub/one (0.00s)\n"}
{"Action":"skip","Package":"example.com/m/a","Test":"TestSub/one","Elapsed":0}
{"Action":"output","Package":"example.com/m/a","Test":"TestSub/two","Output":"    a_test.go:12: got 1, want 2\n"}
{"Action":"fail","Package":"example.com/m/a","Test":"TestSub/two","Elapsed":0.2}
{"Action":"fail","Package":"example.com/m/a","Test":"TestSub","Elapsed":0.2}
{"Action":"output","Package":"example.com/m/a","Output":"FAIL\n"}
{"Action":"output","Package":"example.com/m/a","Output":"exit status 1\n"}
{"Action":"fail","Package":"example.com/m/a","Elapsed":2.0}
not json: go test's own message
{"Action":"output","Package":"example.com/m","Test":"TestSkip","Output":"    m_test.go:3: needs root\n"}
{"Action":"skip","Package":"example.com/m","Test":"TestSkip","Elapsed":0}
{"Action":"pass","Package":"example.com/m","Elapsed":0.04}
{"Action":"skip","Package":"example.com/m/b","Elapsed":0}
`
	want := `PASS  a TestOK (1.5s)
SKIP  a TestSub/one
          a_test.go:9: no fuse here
FAIL  a TestSub/two (0.2s)
          a_test.go:12: got 1, want 2
FAIL  a TestSub (0.2s)
      exit status 1
FAIL  a 2.0s (1 passed, 0 skipped, 1 failed)
not json: go test's own message
SKIP  . TestSkip
          m_test.go:3: needs root
ok    . 0.0s (0 passed, 1 skipped)
ok    b (no tests)
`
	var b strings.Builder
	s := newSummary(&b, m)
	s.read(strings.NewReader(in))
	if b.String() != want {
		t.Errorf("summary:\n%s\nwant:\n%s", b.String(), want)
	}
	if !s.failed {
		t.Error("a failed test did not make the summary fail")
	}
}
