<?php
// Front controller of a drover test release: every path but static files.
require __DIR__ . '/../lib/app.php';
app_main();
