function scanimageStandin(port, nFrames, planes, periodS)
% scanimageStandin  Plays ScanImage to bcirigFrameSender: calls it once per acquired frame.
%
%   scanimageStandin(PORT, NFRAMES, PLANES, PERIODS)
%
% Builds what a ScanImage user function sees on 'frameAcquired' -- src.hSI.hDisplay.stripeDataBuffer
% (a ring of 3 stripes) and stripeDataBufferPointer -- from plain structs (field access is the same
% syntax as ScanImage's object properties), and calls
%     bcirigFrameSender(src, [], '127.0.0.1', PORT)
% NFRAMES times, PERIODS seconds apart (0 = as fast as possible).
%
% Frames k = 1..NFRAMES hold standinImage(k, 64, 96): 64 lines x 96 pixels, int16, negative values
% included (tests/acquisition/test_scanimage.py computes the same pattern). Two acquisitions, as in
% ScanImage's LOOP mode:
%   acquisition 1, frames 1..ceil(NFRAMES/2): ScanImage's own layout -- imageData transposed
%     (pixels x lines, roiData.transposed = true), zIdx = plane within a PLANES-plane fast-Z volume;
%   acquisition 2, the rest: frameNumberAcq restarts at 1 (frameNumberAcqMode goes on), imageData is
%     a plain lines x pixels array, no 'transposed' field and no zIdx (plane unknown).
% frameTimestamp(k) = (k - 1) / 30 + 0.0123456789 seconds. Before them, 2 frames while focusing
% (hSI.acqState 'focus', images standinImage(1000 + j)), which the user function must not send.

H = 64;
W = 96;
zSeries = (0:planes - 1) * 30;
nFirst = ceil(nFrames / 2);

buffer = cell(1, 3);
for j = 1:2
    stripe = struct();
    stripe.frameNumberAcqMode = j;
    stripe.frameNumberAcq = j;
    stripe.frameTimestamp = (j - 1) / 30;
    roi = struct();
    roi.transposed = true;
    roi.imageData = {{standinImage(1000 + j, H, W).'}};
    stripe.roiData = {roi};
    buffer{j} = stripe;
    bcirigFrameSender(makeSrc(buffer, j, 'focus'), [], '127.0.0.1', port);
end

for k = 1:nFrames
    img = standinImage(k, H, W);
    stripe = struct();
    stripe.frameNumberAcqMode = k;
    stripe.frameTimestamp = (k - 1) / 30 + 0.0123456789;
    roi = struct();
    roi.channels = [1 2];
    if k <= nFirst
        stripe.frameNumberAcq = k;
        stripe.acqNumber = 1;
        stripe.zIdx = mod(k - 1, planes) + 1;
        stripe.zSeries = zSeries;
        roi.transposed = true;
        roi.zs = zSeries(stripe.zIdx);
        roi.imageData = {{img.'}, {-img.'}};
    else
        stripe.frameNumberAcq = k - nFirst;
        stripe.acqNumber = 2;
        roi.zs = 0;
        roi.imageData = {{img}, {-img}};
    end
    stripe.roiData = {roi};

    pointer = mod(k + 1, numel(buffer)) + 1;   % the ring goes on after the 2 focus frames
    buffer{pointer} = stripe;
    bcirigFrameSender(makeSrc(buffer, pointer, 'loop'), [], '127.0.0.1', port);
    if periodS > 0
        pause(periodS);
    end
end
bcirigFrameSender('close');
end


function img = standinImage(k, H, W)
% frame k's image: lines x pixels, int16, the full int16 range (negative values included)
[c, r] = meshgrid(0:W - 1, 0:H - 1);
v = mod(k * 7919 + r * 131 + c * 17 + 7 * r .* c, 65536) - 32768;
img = int16(v);
end


function src = makeSrc(buffer, pointer, acqState)
% what ScanImage passes a user function: src.hSI, the ScanImage handle
src = struct();
src.hSI = struct();
src.hSI.acqState = acqState;
src.hSI.hDisplay = struct();
src.hSI.hDisplay.stripeDataBuffer = buffer;
src.hSI.hDisplay.stripeDataBufferPointer = pointer;
end
