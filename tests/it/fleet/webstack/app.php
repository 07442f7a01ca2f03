<?php
// The test application of a drover test node's release (tests/it/fleet), the
// PHP twin of webserver.py's handler: same paths, headers, bodies and
// session semantics, so the load generator cannot tell the two apart.
//   GET /healthz   200 "ok node=N release=R php=P"
//   GET /slow?s=N  like / after N seconds (in flight across a reload)
//   GET /static    a cacheable page (Cache-Control: public), no session
//   GET /warm      warms the node for this release (marker $NODE_ROOT/run/warm/<release>)
//   GET /...       200 "node=N release=R php=P session=S hits=H"
// Session pages carry X-Warm: 1 when this release's warm-up marker is newer
// than the `current` link (warmed since the last switch, by /warm or the
// release's bin/warm hook), else X-Warm: 0 (a cold answer).
// Headers: X-Release, X-Php, X-Php-Ini, X-Pid (Apache adds X-Node); session pages also
// X-Cookie-Names, X-Session, and X-Session-Stale / X-Session-Regressed.
// Sessions live in the farm's memcached (DROVER_TEST_MEMCACHED), spoken to
// with its text protocol over fsockopen: "<writer> <newest seen> <hits>".
// The release marker comes from lib/release.php, included via __DIR__: the
// release this very code was compiled from, never a path through `current`.

function app_release(): string
{
    return require __DIR__ . '/release.php';
}

// The PHP tree this worker runs: /opt/php/<ver>/sbin/php-fpm -> <ver>.
function app_php(): string
{
    return basename(dirname(dirname(PHP_BINARY)));
}

function app_broken(): bool
{
    return is_file(__DIR__ . '/../BROKEN');
}

function app_warm_marker(): string
{
    return getenv('NODE_ROOT') . '/run/warm/' . app_release();
}

function app_is_warm(): bool
{
    // The stat cache only: clearing the realpath cache too would re-resolve
    // `current` and switch this worker without a reload (see webstack.rs).
    clearstatcache();
    $marker = @stat(app_warm_marker());
    $link = @lstat(getenv('NODE_ROOT') . '/srv/app/current');
    return $marker !== false && $link !== false && $marker['mtime'] >= $link['mtime'];
}

function app_reply(int $status, string $body, array $headers = []): void
{
    http_response_code($status);
    header('Content-Type: text/plain');
    header('X-Release: ' . app_release());
    header('X-Php: ' . app_php());
    header('X-Pid: ' . getmypid());
    header('X-Php-Ini: ' . ini_get('user_agent'));
    foreach ($headers as $h) {
        header($h, false);
    }
    echo $body, "\n";
}

// webserver.py's natural(): digit runs compare as numbers and sort before text runs.
function app_natural_cmp(string $a, string $b): int
{
    preg_match_all('/\d+|\D+/', $a, $ma);
    preg_match_all('/\d+|\D+/', $b, $mb);
    $pa = $ma[0];
    $pb = $mb[0];
    $n = min(count($pa), count($pb));
    for ($i = 0; $i < $n; $i++) {
        $da = preg_match('/^\d/', $pa[$i]) === 1;
        $db = preg_match('/^\d/', $pb[$i]) === 1;
        if ($da !== $db) {
            return $da ? -1 : 1;
        }
        $c = $da ? (intval($pa[$i]) <=> intval($pb[$i])) : strcmp($pa[$i], $pb[$i]);
        if ($c !== 0) {
            return $c < 0 ? -1 : 1;
        }
    }
    return count($pa) <=> count($pb);
}

final class Memcached_
{
    /** @var resource */
    private $conn;

    public function __construct(string $endpoint)
    {
        $i = strrpos($endpoint, ':');
        $host = trim(substr($endpoint, 0, $i), '[]');
        $port = (int) substr($endpoint, $i + 1);
        $conn = @fsockopen($host, $port, $errno, $errstr, 2.0);
        if ($conn === false) {
            throw new RuntimeException("cannot connect to memcached $endpoint: $errstr");
        }
        stream_set_timeout($conn, 2);
        $this->conn = $conn;
    }

    private function line(): string
    {
        $l = fgets($this->conn);
        if ($l === false) {
            throw new RuntimeException('memcached closed the connection');
        }
        return rtrim($l, "\r\n");
    }

    public function get(string $key): ?string
    {
        fwrite($this->conn, "get $key\r\n");
        $l = $this->line();
        if ($l === 'END') {
            return null;
        }
        $f = explode(' ', $l);
        if (count($f) !== 4 || $f[0] !== 'VALUE') {
            throw new RuntimeException("bad memcached reply: $l");
        }
        $len = (int) $f[3];
        $data = '';
        while (strlen($data) < $len + 2) {
            $chunk = fread($this->conn, $len + 2 - strlen($data));
            if ($chunk === false || $chunk === '') {
                throw new RuntimeException('memcached closed the connection');
            }
            $data .= $chunk;
        }
        if ($this->line() !== 'END') {
            throw new RuntimeException('bad memcached reply');
        }
        return substr($data, 0, $len);
    }

    public function set(string $key, string $value): void
    {
        fwrite($this->conn, sprintf("set %s 0 0 %d\r\n%s\r\n", $key, strlen($value), $value));
        if ($this->line() !== 'STORED') {
            throw new RuntimeException('memcached did not store');
        }
    }
}

function app_session(string $ident): void
{
    $release = app_release();
    $sid = null;
    $names = [];
    foreach (explode(';', $_SERVER['HTTP_COOKIE'] ?? '') as $part) {
        $kv = explode('=', trim($part), 2);
        $k = $kv[0];
        $v = $kv[1] ?? '';
        if ($k !== '') {
            $names[] = $k;
        }
        if ($k === 'PHPSESSID' && preg_match('/^[0-9a-f]{1,64}$/D', $v)) {
            $sid = $v;
        }
    }
    // Which cookies reached the node (the LB's farm cookie must not).
    $headers = ['X-Cookie-Names: ' . ($names ? implode(',', $names) : '-')];
    $headers[] = 'X-Warm: ' . (app_is_warm() ? '1' : '0');
    if ($sid === null) {
        $sid = bin2hex(random_bytes(12));
        $headers[] = "Set-Cookie: PHPSESSID=$sid; path=/";
    }
    try {
        $store = new Memcached_((string) getenv('DROVER_TEST_MEMCACHED'));
        $record = $store->get("sess:$sid");
        $writer = $release;
        $newest = $release;
        $hits = 0;
        if ($record !== null) {
            [$writer, $newest, $hits] = explode(' ', $record) + ['', '', '0'];
            $hits = (int) $hits;
            if (app_natural_cmp($writer, $release) < 0) {
                $headers[] = "X-Session-Stale: $writer";
            }
            if (app_natural_cmp($newest, $release) > 0) {
                $headers[] = "X-Session-Regressed: $newest";
            } else {
                $newest = $release;
            }
        }
        $hits += 1;
        $store->set("sess:$sid", "$release $newest $hits");
    } catch (RuntimeException $e) {
        app_reply(500, 'session store unavailable: ' . $e->getMessage());
        return;
    }
    $headers[] = "X-Session: $sid";
    app_reply(200, "$ident session=$sid hits=$hits", $headers);
}

function app_main(): void
{
    $node = (string) getenv('DROVER_TEST_NODE');
    if (app_broken()) {
        app_reply(500, "node $node: release " . app_release() . ' is broken');
        return;
    }
    $ident = "node=$node release=" . app_release() . ' php=' . app_php();
    $path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH) ?: '/';
    if ($path === '/healthz') {
        app_reply(200, "ok $ident");
        return;
    }
    if ($path === '/static') {
        app_reply(200, "static $ident", ['Cache-Control: public, max-age=60']);
        return;
    }
    if ($path === '/warm') {
        @mkdir(getenv('NODE_ROOT') . '/run/warm');
        touch(app_warm_marker());
        app_reply(200, "warm node=$node release=" . app_release());
        return;
    }
    if ($path === '/slow') {
        // Until a deadline: a signal interrupting usleep does not shorten it.
        $until = microtime(true) + (float) ($_GET['s'] ?? 1);
        while (($left = $until - microtime(true)) > 0) {
            usleep((int) ($left * 1e6));
        }
    }
    app_session($ident);
}
