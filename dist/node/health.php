<?php
// drover's health endpoint: install it as public/health.php in every release
// (the policy's `health.path`, e.g. /health.php). drover requests it several
// times after every switch and accepts the node only if each answer says
//   release=<id>   the marker of the release tree, from code INCLUDED through
//                  __DIR__ (so it is what OPcache and the realpath cache
//                  really serve, not what the `current` link says now),
//   php=<version>  the PHP tree the worker runs (/opt/php/<version>),
//   pid=<pid>      the PHP-FPM worker that answered; drover checks it is one of
//                  the workers the pool status lists, and that every worker
//                  started after the reload.
// A static file cannot say any of this; it shows a new release 0.1 s after a
// link swap while PHP-FPM keeps serving the old one.
//
// The release build writes release.php at the top of the release tree:
//   <?php return '2026.11.2';
declare(strict_types=1);

header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
try {
    $release = require __DIR__ . '/../release.php';
} catch (\Throwable $e) {
    http_response_code(500);
    echo "no release marker: ", $e->getMessage(), "\n";
    return;
}
if (!is_string($release) || $release === '') {
    http_response_code(500);
    echo "release.php does not return the release id\n";
    return;
}
// /opt/php/<version>/sbin/php-fpm: the tree this worker was started from.
$php = PHP_BINARY !== '' ? basename(dirname(PHP_BINARY, 2)) : PHP_VERSION;
printf("ok release=%s php=%s pid=%d tree=%s\n", $release, $php, getmypid(), basename(dirname(__DIR__)));
