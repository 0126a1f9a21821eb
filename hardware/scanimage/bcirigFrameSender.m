function bcirigFrameSender(src, evt, varargin)
% bcirigFrameSender  ScanImage user function: stream each acquired frame to a bcirig rig.
%
% Register it in ScanImage's User Functions panel for the event 'frameAcquired', with the arguments
% {'RIG-PC-ADDRESS', PORT} or {'RIG-PC-ADDRESS', PORT, CHANNEL}; ScanImage then calls
%     bcirigFrameSender(src, evt, 'RIG-PC-ADDRESS', PORT)
% once per frame. Defaults: host '127.0.0.1', port 5600 (the rig file's default), CHANNEL = the first
% active channel (otherwise a ScanImage channel number, e.g. 2).
%
% Each frame goes out as one message of the bcirig frame protocol, version 1 (PROTOCOL.md in
% bcirig/acquisition), plain-TCP framing: a 40-byte little-endian header, then the pixels.
%   index    = frameNumberAcqMode - 1 (ScanImage counts from 1, the protocol from 0). frameNumberAcqMode
%              keeps counting across the acquisitions of a LOOP; frameNumberAcq (used when the former is
%              missing) restarts at 1 with every acquisition.
%   t_acq_ns = round(frameTimestamp * 1e9): seconds since the start of the acquisition mode.
%   plane    = zIdx - 1 when ScanImage gives a plane index within the volume (fast-Z stacks, or 0 for
%              a single plane); otherwise 65535 = unknown, and the rig uses index modulo its planes.
%   pixels   = the first ROI's image for the channel, sent as it lies in memory (no
%              transpose): ScanImage holds its images transposed (pixels x lines, 'transposed' = true),
%              whose column-major bytes are the image line after line (flags 0). An untransposed
%              lines x pixels array is sent column-major (flags bit 0 set).
%
% Frames ScanImage shows while focusing (hSI.acqState 'focus') are not sent, only GRAB and LOOP.
%
% The connection is kept between calls. If the rig is not listening or a write fails, the frame is
% dropped, a warning is printed once per outage, and connecting is tried again at most every
% RETRY_S seconds; no error ever reaches ScanImage's acquisition loop. The rig counts the missing
% frames from the gap in index.
%
% bcirigFrameSender('close') closes the connection (so does 'clear bcirigFrameSender').

persistent conn host port lastTry warned isOctave littleEndian

RETRY_S = 2;          % seconds between connection attempts while the rig is unreachable
CONNECT_TIMEOUT_S = 1; % MATLAB only (Octave's tcpclient has no such option)

if ischar(src) && strcmp(src, 'close')
    conn = [];
    host = [];
    port = [];
    lastTry = [];
    warned = false;
    return;
end

try
    if isempty(isOctave)
        isOctave = exist('OCTAVE_VERSION', 'builtin') > 0;
        [~, ~, endian] = computer();
        littleEndian = (endian == 'L');
        warned = false;
    end

    % user-function arguments: host, port, channel
    newHost = '127.0.0.1';
    newPort = 5600;
    channel = [];
    if numel(varargin) >= 1 && ~isempty(varargin{1})
        newHost = char(varargin{1});
    end
    if numel(varargin) >= 2 && ~isempty(varargin{2})
        newPort = double(varargin{2});
    end
    if numel(varargin) >= 3 && ~isempty(varargin{3})
        channel = double(varargin{3});
    end
    if ~isequal(newHost, host) || ~isequal(newPort, port)
        conn = [];
        host = newHost;
        port = newPort;
        lastTry = [];
    end

    % ScanImage raises frameAcquired while focusing too; those frames are no acquisition: not sent
    if strcmp(char(fieldOr(src.hSI, 'acqState', '')), 'focus')
        return;
    end

    % the last acquired frame
    hDisplay = src.hSI.hDisplay;
    stripe = hDisplay.stripeDataBuffer{hDisplay.stripeDataBufferPointer};
    roi = stripe.roiData{1};
    chIdx = 1;
    if ~isempty(channel)
        chIdx = find(fieldOr(roi, 'channels', []) == channel, 1);
        if isempty(chIdx)
            warned = warnOnce(warned, sprintf('channel %d is not among the acquired channels; frame not sent', channel));
            return;
        end
    end
    img = roi.imageData{chIdx}{1};

    [code, ok] = dtypeCode(img);
    if ~ok
        warned = warnOnce(warned, sprintf('pixels of class %s cannot be sent; frame not sent', class(img)));
        return;
    end

    frameNumber = fieldOr(stripe, 'frameNumberAcqMode', []);
    if isempty(frameNumber)
        frameNumber = fieldOr(stripe, 'frameNumberAcq', []);
    end
    if isempty(frameNumber) || ~isfinite(frameNumber(1))
        index = -1;
    else
        index = double(frameNumber(1)) - 1;
    end

    ts = fieldOr(stripe, 'frameTimestamp', []);
    if isempty(ts) || ~isfinite(ts(1))
        tAcqNs = -1;
    else
        tAcqNs = round(double(ts(1)) * 1e9);
    end

    plane = planeOf(src, stripe);

    if logical(fieldOr(roi, 'transposed', false))
        height = size(img, 2);   % pixels x lines in memory = the image line after line
        width = size(img, 1);
        flags = 0;
    else
        height = size(img, 1);   % lines x pixels, column-major
        width = size(img, 2);
        flags = 1;
    end
    pix = typecast(img(:), 'uint8');   % native byte order
    if ~littleEndian
        flags = flags + 2;                % pixels big-endian (the header is always little-endian)
    end

    L = littleEndian;
    header = [uint8('BCIF'), le(uint16(1), L), le(uint16(40), L), le(int64(index), L), ...
              le(int64(tAcqNs), L), le(uint16(plane), L), uint8(code), uint8(flags), ...
              le(uint32(height), L), le(uint32(width), L), le(uint32(numel(pix)), L)];
    message = [header, reshape(pix, 1, [])];

    % connect (at most every RETRY_S seconds while the rig is unreachable)
    if isempty(conn)
        if ~isempty(lastTry) && toc(lastTry) < RETRY_S
            return;
        end
        lastTry = tic;
        try
            if isOctave
                conn = tcpclient(host, port);
            else
                conn = tcpclient(host, port, 'ConnectTimeout', CONNECT_TIMEOUT_S);
            end
        catch err
            conn = [];
            warned = warnOnce(warned, sprintf('cannot connect to the rig at %s:%d (%s); frames are dropped until it listens', ...
                             host, port, err.message));
            return;
        end
        if warned
            fprintf('bcirigFrameSender: connected to the rig at %s:%d\n', host, port);
        end
        warned = false;
    end

    % send: MATLAB's write throws on failure; Octave's returns the bytes written (-1 on failure)
    sent = true;
    try
        if isOctave
            n = write(conn, message);
            sent = isequal(double(n), numel(message));
        else
            write(conn, message);
        end
    catch
        sent = false;
    end
    if ~sent
        conn = [];
        lastTry = tic;
        warned = warnOnce(warned, sprintf('lost the connection to the rig at %s:%d; reconnecting', host, port));
    end
catch err
    warned = warnOnce(warned, sprintf('frame not sent: %s', err.message));
end

end


function value = fieldOr(s, name, default)
% s.(name) for a struct or an object (ScanImage's classes), default when it has no such field
try
    value = s.(name);
catch
    value = default;
end
end


function [code, ok] = dtypeCode(img)
% the protocol's pixel type code
ok = true;
switch class(img)
    case 'uint8'
        code = 1;
    case 'uint16'
        code = 2;
    case 'uint32'
        code = 3;
    case 'int16'
        code = 4;
    otherwise
        code = 0;
        ok = false;
end
end


function plane = planeOf(src, stripe)
% 0-based plane of the frame within the volume; 65535 = unknown
plane = 65535;
zIdx = fieldOr(stripe, 'zIdx', []);
if isempty(zIdx) || ~isnumeric(zIdx) || ~isscalar(zIdx) || ~isfinite(zIdx)
    return;   % not given, or NaN on a flyback frame
end
% in a slow stack zIdx counts frames across slices, not planes of a volume
try
    if logical(src.hSI.hStackManager.isSlowZ)
        return;
    end
catch
end
zSeries = fieldOr(stripe, 'zSeries', []);
if zIdx >= 1 && zIdx == round(zIdx) && zIdx <= 65535 && (isempty(zSeries) || zIdx <= numel(zSeries))
    plane = double(zIdx) - 1;
end
end


function warned = warnOnce(warned, msg)
% one warning per outage; a successful connection re-arms it
if isempty(warned) || ~warned
    warning('bcirig:frameSender', 'bcirigFrameSender: %s', msg);
    warned = true;
end
end


function bytes = le(value, littleEndian)
% the bytes of a scalar, little-endian
bytes = typecast(value, 'uint8');
if ~littleEndian
    bytes = fliplr(bytes);
end
end
