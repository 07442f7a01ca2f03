<?php
// drover's health endpoint (a copy of the logic of dist/node/health.php):
// 200 and `release=<id> php=<ver> pid=<pid>`, where the release marker comes
// from code included via __DIR__ (the release this worker compiled), php is
// the /opt/php/<ver> tree the worker runs, and pid lets drover match the
// answer against the pool status (every worker started after the reload).
$release = require __DIR__ . '/../lib/release.php';
$php = basename(dirname(dirname(PHP_BINARY)));
header('Content-Type: text/plain');
header('Cache-Control: no-store');
header('X-Release: ' . $release);
header('X-Php: ' . $php);
if (is_file(__DIR__ . '/../BROKEN')) {
    http_response_code(500);
    echo "release $release is broken\n";
    return;
}
echo "ok release=$release php=$php pid=", getmypid(), "\n";
