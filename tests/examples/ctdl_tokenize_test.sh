#!/usr/bin/env bash
# ctdl-tokenize: tokens and ids of stdin lines (expected values from the goldens that
# Google's tokenization.py made, tests/fixtures/tokenizer_goldens.json), CRLF input,
# empty lines, the invalid-UTF-8 error naming the line, and a failed write to stdout.
set -uo pipefail
prog=$1 vocab=$2
fail() { echo "FAILED: $*"; exit 1; }
got=$(printf 'Hello, World! unaffable\n\nCaf\xc3\xa9 d\xc3\xa9j\xc3\xa0 vu\r\n' | "$prog" --vocab_file="$vocab" --cased=false) || fail "exit $?"
want=$'hello , world ! un ##aff ##able\n\ncaf ##e de ##j ##a vu'
[ "$got" = "$want" ] || fail "uncased tokens: got [$got]"
got=$(printf 'Hello, World! unaffable\n' | "$prog" --vocab_file="$vocab" --cased=true) || fail "exit $?"
[ "$got" = "Hello , World ! un ##aff ##able" ] || fail "cased tokens: got [$got]"
got=$(printf 'hello world\n' | "$prog" --vocab_file="$vocab" --cased true --ids) || fail "exit $?"
[ "$got" = "17 18" ] || fail "ids: got [$got]"
err=$(printf 'fine\nbad \xc3( line\nnever reached\n' | "$prog" --vocab_file="$vocab" --cased=true 2>&1 >/dev/null); rc=$?
[ $rc = 1 ] || fail "exit $rc for invalid UTF-8"
[ "$err" = "ctdl-tokenize: stdin:2: invalid UTF-8 at byte 5 of the line" ] || fail "message: $err"
err=$("$prog" --vocab_file="$vocab" 2>&1 </dev/null); [ $? != 0 ] && grep -q "cased is required" <<<"$err" || fail "--cased not required: $err"
# A failed write to stdout (a full disk) is an error, not exit 0 with the output lost.
if [ -w /dev/full ]; then
  err=$(printf 'hello world\n' | "$prog" --vocab_file="$vocab" --cased=true 2>&1 >/dev/full); rc=$?
  [ $rc = 1 ] || fail "exit $rc writing to /dev/full"
  grep -q "ctdl-tokenize: stdout: write failed (No space left on device)" <<<"$err" || fail "/dev/full message: $err"
fi
# Tokenizer rules: the original pipeline's by default (a 101-character word is [UNK];
# private-use U+E000 is dropped as control), Google's first release on request (200
# characters; U+E000 kept, so no piece matches).
a101=$(printf 'a%.0s' $(seq 101)) pieces101="a$(printf ' ##a%.0s' $(seq 100))"
got=$(printf '%s ab\xee\x80\x80\n' "$a101" | "$prog" --vocab_file="$vocab" --cased=true) || fail "exit $?"
[ "$got" = "[UNK] a ##b" ] || fail "original rules: got [$got]"
got=$(printf '%s ab\xee\x80\x80\n' "$a101" | "$prog" --vocab_file="$vocab" --cased=true --tokenizer_rules=google) || fail "exit $?"
[ "$got" = "$pieces101 [UNK]" ] || fail "google rules: got [$got]"
got=$(printf '%s\n' "$a101" | "$prog" --vocab_file="$vocab" --cased=true --max_chars_per_word=101) || fail "exit $?"
[ "$got" = "$pieces101" ] || fail "--max_chars_per_word over the rules: got [$got]"
err=$("$prog" --vocab_file="$vocab" --cased=true --tokenizer_rules=hf 2>&1 </dev/null); [ $? != 0 ] && grep -q "tokenizer_rules" <<<"$err" || fail "--tokenizer_rules=hf accepted: $err"
echo "ctdl-tokenize: all checks passed"
